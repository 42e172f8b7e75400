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
    assert_eq!(testkit::plant::delete_event(c, a.id, 3).unwrap(), 1);
    assert_eq!(
        testkit::plant::change_payload(c, b.id, 4, "{\"tampered\":true}").unwrap(),
        1
    );
    let booked = Booking::all(c).unwrap();
    let first = &booked[0];
    assert_eq!(
        testkit::plant::overlapping_booking(c, first.environment_id, b.request_id.unwrap())
            .unwrap(),
        1
    );
    let free = Environment::all(c).unwrap().into_iter().last().unwrap();
    assert_eq!(testkit::plant::leak_environment(c, free.id).unwrap(), 1);
    let second = testkit::plant::second_build(c, a.request_id.unwrap()).unwrap();
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
            a.request_id.unwrap(),
            a.id,
            second
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

/// Rows against the loadgen log: each planted kind of HTTP row is counted under
/// its own name, with an example, and never under another.
#[test]
fn check_counts_planted_http_rows() {
    let dir = tempfile::tempdir().unwrap();
    let out = locklab(&["migrate", "--database-url", "db.sqlite3"], dir.path());
    assert!(out.status.success(), "{:?}", text(&out));
    let target = DbTarget::Sqlite(dir.path().join("db.sqlite3"));
    let mut conn = LabConn::open(&target, Arc::new(Policy::default()), false).unwrap();
    let c = conn.diesel();
    use testkit::plant::{delete_request, request_row};
    // ok: promised and stored once.
    let fine = request_row(c, Some("fine")).unwrap();
    // lost: promised, then gone (deleted last, so that its rowid is not reused).
    let gone = request_row(c, Some("lost")).unwrap();
    // duplicated: one promised, two stored.
    let dup = request_row(c, Some("dup")).unwrap();
    request_row(c, Some("dup")).unwrap();
    // partial: answered 503, two rows written anyway.
    request_row(c, Some("part")).unwrap();
    request_row(c, Some("part")).unwrap();
    // unlogged: no HTTP request in the log made these.
    request_row(c, Some("ghost")).unwrap();
    request_row(c, None).unwrap();
    // misattributed: "mis" was answered with another request's row.
    let other = request_row(c, Some("other")).unwrap();
    // unreadable: a 201 whose body could not be read; no response.
    for _ in 0..3 {
        request_row(c, Some("unr")).unwrap();
    }
    request_row(c, Some("nr")).unwrap();
    delete_request(c, gone).unwrap();
    drop(conn);
    let line = |rid: &str, status: Option<u16>, ids: &[i64], unreadable: bool| {
        let mut v = serde_json::json!({
            "request_id": rid, "status": status, "latency_ms": 1.0, "ids": ids, "client": 0
        });
        if unreadable {
            v["unreadable"] = true.into();
        }
        v.to_string()
    };
    let log = [
        line("fine", Some(201), &[fine.0], false),
        line("lost", Some(201), &[gone.0], false),
        line("dup", Some(201), &[dup.0], false),
        line("part", Some(503), &[], false),
        line("other", Some(201), &[other.0], false),
        line("mis", Some(201), &[other.0], false),
        line("unr", Some(201), &[], true),
        line("nr", None, &[], false),
    ]
    .join("\n");
    std::fs::write(dir.path().join("log.jsonl"), log).unwrap();
    let (ok, v) = json_check(dir.path(), "db.sqlite3", Some("log.jsonl"));
    assert!(!ok, "violations exit 1: {v}");
    let c = &v["counts"];
    for (key, want) in [
        ("lost", 1),
        ("duplicated", 1),
        ("partial_writes", 2),
        ("unlogged", 2),
        ("misattributed", 1),
        ("unconfirmed", 4),
    ] {
        assert_eq!(c[key], want, "{key}: {v}");
        if key != "unconfirmed" {
            assert!(
                v["examples"][key].as_array().is_some_and(|a| !a.is_empty()),
                "{key} has examples: {v}"
            );
        }
    }
    assert!(
        v["examples"]["lost"]
            .to_string()
            .contains(&gone.0.to_string()),
        "the lost row is named: {v}"
    );
}
