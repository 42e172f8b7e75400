//! `check` finds planted violations, counts each and names it with its ids.

use std::sync::Arc;

use schema::db::{DbTarget, LabConn, Policy};
use schema::models::{Booking, Build, Environment};
use schema::types::Outcome;

use crate::{locklab, serial, text, SMALL_LOAD};

fn json_check(dir: &std::path::Path, db: &str, log: Option<&str>) -> (bool, serde_json::Value) {
    let mut args = vec!["check", "--json", "--database-url", db];
    if let Some(log) = log {
        args.extend(["--loadgen-log", log]);
    }
    let out = locklab(&args, dir);
    let (stdout, stderr) = text(&out);
    let v: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    (out.status.success(), v)
}

#[test]
fn check_finds_planted_violations() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "run",
        "--preset",
        "robust",
        "--duration",
        "4s",
        "--out",
        "r",
    ];
    args.extend(SMALL_LOAD);
    let out = locklab(&args, dir.path());
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");

    // A clean run passes, and without the log the counts that need it are null.
    let (ok, v) = json_check(dir.path(), "r/locklab.sqlite3", Some("r/loadgen.jsonl"));
    assert!(ok, "a robust run checks clean: {v}");
    let (_, v) = json_check(dir.path(), "r/locklab.sqlite3", None);
    for key in ["lost", "duplicated", "partial_writes", "unconfirmed"] {
        assert!(
            v["counts"][key].is_null(),
            "{key} must be null without the log: {v}"
        );
    }
    assert_eq!(v["counts"]["mismatched"], 0);

    let target = DbTarget::Sqlite(dir.path().join("r/locklab.sqlite3"));
    let mut conn = LabConn::open(&target, Arc::new(Policy::default()), false).unwrap();
    let c = conn.diesel();
    let builds: Vec<Build> = Build::all(c)
        .unwrap()
        .into_iter()
        .filter(|b| b.outcome == Some(Outcome::Succeeded))
        .collect();
    assert!(builds.len() >= 2, "the run completed builds");
    let (a, b) = (&builds[0], &builds[1]);
    assert_eq!(schema::plant::delete_event(c, a.id, 3).unwrap(), 1);
    assert_eq!(
        schema::plant::change_payload(c, b.id, 4, "{\"tampered\":true}").unwrap(),
        1
    );
    let booked = Booking::all(c).unwrap();
    let first = &booked[0];
    assert_eq!(
        schema::plant::overlapping_booking(c, first.environment_id, b.request_id).unwrap(),
        1
    );
    let free = Environment::all(c).unwrap().into_iter().last().unwrap();
    assert_eq!(schema::plant::leak_environment(c, free.id).unwrap(), 1);
    let second = schema::plant::second_build(c, a.request_id).unwrap();
    drop(conn);

    let (ok, v) = json_check(dir.path(), "r/locklab.sqlite3", Some("r/loadgen.jsonl"));
    assert!(!ok, "check exits 1 on violations");
    let counts = &v["counts"];
    let examples = &v["examples"];
    assert!(counts["lost"].as_u64().unwrap() >= 1, "{v}");
    let lost: Vec<String> = serde_json::from_value(examples["lost"].clone()).unwrap();
    assert!(lost.contains(&format!("build {} seq 3", a.id)), "{lost:?}");
    assert_eq!(counts["mismatched"], 1, "{v}");
    assert!(examples["mismatched"][0]
        .as_str()
        .unwrap()
        .contains(&format!("build {} seq 4", b.id)));
    assert!(counts["double_booked"].as_u64().unwrap() >= 1, "{v}");
    assert!(examples["double_booked"][0]
        .as_str()
        .unwrap()
        .contains(&format!("environment {}", first.environment_id)));
    assert_eq!(counts["leaked_bookings"], 1, "{v}");
    assert!(examples["leaked_bookings"][0]
        .as_str()
        .unwrap()
        .contains(&free.name));
    assert_eq!(counts["double_claimed"], 1, "{v}");
    assert!(examples["double_claimed"][0]
        .as_str()
        .unwrap()
        .contains(&format!(
            "request {} has builds [{}, {}]",
            a.request_id, a.id, second
        )));
    assert_eq!(counts["integrity_ok"], true);

    // the text form names them too
    let out = locklab(
        &[
            "check",
            "--database-url",
            "r/locklab.sqlite3",
            "--loadgen-log",
            "r/loadgen.jsonl",
        ],
        dir.path(),
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("double_claimed: 1  e.g. request"),
        "{stdout}"
    );
    assert!(stderr.contains("violation"), "{stderr}");
}
