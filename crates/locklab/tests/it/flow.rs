//! The full flow through `locklab run`: requests posted to webui are claimed,
//! ingested completely and completed; environments are freed; every stored
//! event equals the one regenerated from its seed; report.json follows the
//! contract and its counting identities hold.

use std::sync::Arc;

use schema::db::{DbTarget, LabConn, Policy};
use schema::models::{Build, BuildEvent, BuildRequest, Environment};
use schema::stream::generate;
use schema::types::{LockState, Outcome};

use crate::{locklab, serial, text, SMALL_LOAD};

const PROCESS_KEYS: &[&str] = &[
    "name",
    "ops",
    "ok",
    "retried",
    "gave_up",
    "failed",
    "rows_committed",
    "rows_per_s",
    "lock_wait_share",
    "latency_ms",
    "by_op",
    "rolled_back",
    "aborted",
    "stalls",
];
const CLASSES: &[&str] = &[
    "busy_upgrade",
    "busy_snapshot",
    "busy_timeout",
    "locked",
    "constraint",
    "serialization",
    "deadlock",
    "lock_wait_timeout",
    "other",
];
const CHECK_KEYS: &[&str] = &[
    "lost",
    "duplicated",
    "mismatched",
    "double_claimed",
    "double_booked",
    "leaked_bookings",
    "partial_writes",
    "stuck",
    "unconfirmed",
    "unfinished",
    "integrity_ok",
];

/// Asserts report.json's contract and identities; returns it.
pub fn assert_contract(r: &serde_json::Value) {
    assert_eq!(r["schema_version"], 2);
    for key in [
        "preset",
        "backend",
        "duration_s",
        "environment",
        "load",
        "settings",
        "processes",
        "loadgen",
        "check",
    ] {
        assert!(r.get(key).is_some(), "report lacks {key}");
    }
    for key in ["sqlite_version", "fs_type", "cores"] {
        assert!(
            r["environment"].get(key).is_some(),
            "environment lacks {key}"
        );
    }
    for key in ["clients", "num", "sleep_s", "events_per_build"] {
        assert!(r["load"].get(key).is_some(), "load lacks {key}");
    }
    for key in [
        "journal_mode",
        "busy_timeout_ms",
        "synchronous",
        "txn_mode",
        "atomic_requests",
        "retry",
        "claim",
        "commit",
        "txn_work_ms",
        "wake",
        "create_shape",
        "writers",
    ] {
        assert!(r["settings"].get(key).is_some(), "settings lacks {key}");
    }
    for key in [
        "requests",
        "status",
        "no_response",
        "clients_mean",
        "clients_stddev",
    ] {
        assert!(r["loadgen"].get(key).is_some(), "loadgen lacks {key}");
    }
    for key in CHECK_KEYS {
        assert!(r["check"].get(*key).is_some(), "check lacks {key}");
    }
    let names: Vec<&str> = r["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for n in ["webui", "runbuilds", "buildinfohelper"] {
        assert!(names.contains(&n), "no {n} in {names:?}");
    }
    for p in r["processes"].as_array().unwrap() {
        for key in PROCESS_KEYS {
            assert!(p.get(*key).is_some(), "{} lacks {key}", p["name"]);
        }
        for class in CLASSES {
            assert!(
                p["failed"].get(*class).is_some(),
                "{} failed lacks {class}",
                p["name"]
            );
        }
        for key in ["p50", "p95", "p99", "max"] {
            assert!(p["latency_ms"].get(key).is_some());
        }
        let n = |k: &str| p[k].as_u64().unwrap();
        assert_eq!(
            n("ops"),
            n("ok") + n("gave_up") + n("rolled_back"),
            "ops = ok + gave_up + rolled_back for {}",
            p["name"]
        );
        assert_eq!(n("aborted"), n("rolled_back"));
        assert!(p["stalls"].is_array(), "stalls is always a list");
        for (op, o) in p["by_op"].as_object().unwrap() {
            let m = |k: &str| o[k].as_u64().unwrap();
            assert_eq!(
                m("ops"),
                m("ok") + m("gave_up") + m("rolled_back"),
                "{op} of {}",
                p["name"]
            );
        }
        let failed: u64 = p["failed"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(
            failed,
            n("retried") + n("gave_up"),
            "Σ failed = retried + gave_up for {}",
            p["name"]
        );
    }
    let statuses: u64 = r["loadgen"]["status"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        r["loadgen"]["requests"].as_u64().unwrap(),
        statuses + r["loadgen"]["no_response"].as_u64().unwrap(),
        "every loadgen request has a status or no response"
    );
}

#[test]
fn robust_run_flows_end_to_end() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "run",
        "--preset",
        "robust",
        "--duration",
        "6s",
        "--out",
        "r",
        "--strict",
    ];
    args.extend(SMALL_LOAD);
    let out = locklab(&args, dir.path());
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "--strict passes a robust run:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("verdict:"), "{stdout}");
    assert!(
        stdout.contains("│ process"),
        "the table is printed:\n{stdout}"
    );

    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r/report.json")).unwrap())
            .unwrap();
    assert_contract(&r);
    assert_eq!(r["preset"], "robust");
    assert_eq!(r["settings"]["journal_mode"], "wal");
    for key in CHECK_KEYS.iter().filter(|k| **k != "integrity_ok") {
        assert_eq!(
            r["check"][*key], 0,
            "check {key} in a robust run: {}",
            r["check"]
        );
    }
    assert_eq!(r["check"]["integrity_ok"], true);

    // The database itself: claimed, ingested completely, completed, freed.
    let target = DbTarget::Sqlite(dir.path().join("r/locklab.sqlite3"));
    let mut conn = LabConn::open(&target, Arc::new(Policy::default()), false).unwrap();
    let c = conn.diesel();
    let states = BuildRequest::count_by_state(c).unwrap();
    assert!(
        states.get("completed").copied().unwrap_or(0) > 0,
        "{states:?}"
    );
    assert_eq!(states.get("inprogress"), None, "{states:?}");
    let builds = Build::all(c).unwrap();
    assert!(!builds.is_empty());
    for b in &builds {
        assert_eq!(b.outcome, Some(Outcome::Succeeded), "build {}", b.id);
        let stored = BuildEvent::for_build(c, b.id).unwrap();
        let expected = generate(b.seed.unwrap(), b.events_expected.unwrap() as u32);
        assert_eq!(stored.len(), expected.len(), "build {} is complete", b.id);
        for (s, e) in stored.iter().zip(&expected) {
            assert_eq!(
                (s.seq, s.kind, &s.name, &s.payload),
                (e.seq, e.kind, &e.name, &e.payload)
            );
        }
    }
    assert!(Environment::all(c)
        .unwrap()
        .iter()
        .all(|e| e.lock_state == LockState::Free));

    // report DIR prints the table again; the timeline has a lane per process
    let out = locklab(&["report", "r"], dir.path());
    let (again, _) = text(&out);
    assert!(out.status.success());
    for line in stdout.lines().filter(|l| l.starts_with("│ webui")) {
        assert!(
            again.contains(line),
            "report shows the same webui row:\n{again}"
        );
    }
    // --by-op shows where each process's operations went.
    let out = locklab(&["report", "r", "--by-op"], dir.path());
    let (by_op, _) = text(&out);
    assert!(out.status.success());
    for op in ["create_request", "claim", "write_batch", "rolled_back"] {
        assert!(by_op.contains(op), "report --by-op lacks {op}:\n{by_op}");
    }
    // A schema_version 1 file (no rolled_back, no stalls) still reads, with
    // rolled_back = 0, and its identities are checked as version 1 counted.
    let mut v1 = r.clone();
    v1["schema_version"] = 1.into();
    for p in v1["processes"].as_array_mut().unwrap() {
        let p = p.as_object_mut().unwrap();
        let rb = p
            .remove("rolled_back")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        for key in ["aborted", "stalls", "stalls_total"] {
            p.remove(key);
        }
        // version 1 counted a rolled-back operation as ok
        let ok = p["ok"].as_u64().unwrap() + rb;
        p.insert("ok".to_string(), ok.into());
        for o in p["by_op"].as_object_mut().unwrap().values_mut() {
            let o = o.as_object_mut().unwrap();
            let rb = o
                .remove("rolled_back")
                .and_then(|v| v.as_u64())
                .unwrap_or(0);
            let ok = o["ok"].as_u64().unwrap() + rb;
            o.insert("ok".to_string(), ok.into());
        }
    }
    for key in ["drain_s", "identity_violations"] {
        v1.as_object_mut().unwrap().remove(key);
    }
    std::fs::create_dir_all(dir.path().join("v1")).unwrap();
    std::fs::write(dir.path().join("v1/report.json"), v1.to_string()).unwrap();
    let out = locklab(&["report", "v1", "--json"], dir.path());
    let (v1_out, v1_err) = text(&out);
    assert!(out.status.success(), "{v1_out}\n{v1_err}");
    let read: serde_json::Value = serde_json::from_str(&v1_out).unwrap();
    assert_eq!(read["schema_version"], 1);
    assert_eq!(read["processes"][0]["rolled_back"], 0);
    assert_eq!(read["identity_violations"], serde_json::json!([]));

    let svg = std::fs::read_to_string(dir.path().join("r/timeline.svg")).unwrap();
    for lane in ["webui", "runbuilds", "buildinfohelper", "write lock held"] {
        assert!(svg.contains(lane), "timeline lacks {lane}");
    }
    let md = std::fs::read_to_string(dir.path().join("r/report.md")).unwrap();
    assert!(md.contains("| webui |"), "{md}");
    let out = locklab(&["timeline", "r", "--out", "t.svg"], dir.path());
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(dir.path().join("t.svg").exists());
}
