//! `locklab run` on real PostgreSQL and MariaDB servers: the full flow, and
//! the isolation and engine traps of the second source document, measured.
//!
//! Ignored by default; `scripts/test-servers` installs and starts the servers
//! and runs them. The servers come from `LAB_POSTGRES_URL` and `LAB_MYSQL_URL`
//! (default: the lab user on 127.0.0.1); each run gets its own database,
//! named after the test, which `run` drops and creates again.
//!
//! Every assertion is a class or a range; the counts come from the servers.

use std::path::Path;

use schema::backend::Kind;
use schema::db::DbTarget;
use serde_json::Value;

use crate::{locklab, serial, text};

/// The server URL of `kind` with the database `lab_cli_{name}`.
fn server_url(kind: Kind, name: &str) -> String {
    let (var, default) = match kind {
        Kind::Postgres => ("LAB_POSTGRES_URL", schema::settings::LOCAL_POSTGRES_URL),
        _ => ("LAB_MYSQL_URL", schema::settings::LOCAL_MYSQL_URL),
    };
    let url = std::env::var(var).unwrap_or_else(|_| default.to_string());
    let DbTarget::Server(server) = DbTarget::parse(&url).unwrap() else {
        panic!("{var}={url} is not a server URL")
    };
    server
        .with_database(&format!("lab_cli_{}", name.replace('-', "_")))
        .url()
        .to_string()
}

/// `locklab run` with `args` on the server of `kind`; returns report.json.
fn run_on(kind: Kind, name: &str, out: &Path, args: &[&str]) -> Value {
    let url = server_url(kind, name);
    let out_s = out.to_str().unwrap();
    let mut all = vec!["run", "--database-url", &url, "--out", out_s];
    all.extend_from_slice(args);
    let o = locklab(&all, out.parent().unwrap());
    let (stdout, stderr) = text(&o);
    assert!(
        o.status.success(),
        "locklab {all:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stderr.contains("a fresh database for this run"),
        "run says it made a fresh database: {stderr}"
    );
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
}

fn count(v: &Value, path: &[&str]) -> u64 {
    let mut x = v;
    for p in path {
        x = &x[*p];
    }
    x.as_u64()
        .unwrap_or_else(|| panic!("{path:?} is not a count in {v}"))
}

fn process<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no process {name} in {r}"))
}

/// The data invariants: nothing lost, duplicated, double-claimed or
/// mismatched (events equal the regenerated streams), nothing leaked.
fn assert_data_whole(r: &Value) {
    let c = &r["check"];
    for k in [
        "lost",
        "duplicated",
        "mismatched",
        "double_claimed",
        "double_booked",
        "leaked_bookings",
        "leaked_partial_bookings",
        "partial_writes",
        "stuck",
        "beyond_expected",
    ] {
        assert_eq!(c[k], 0, "check.{k} in {c}");
    }
    assert!(
        c["integrity_ok"].is_null(),
        "no integrity check on a server"
    );
    for p in r["processes"].as_array().unwrap() {
        assert!(p["lock_wait_share"].is_null(), "not measured on a server");
        assert_eq!(p["rollbacks_not_undone"], 0, "a transactional engine: {p}");
    }
}

/// The full flow on each server with its preset (and, on MariaDB, two
/// schedulers claiming with `FOR UPDATE SKIP LOCKED`): work in all three
/// processes, builds completed, and every invariant holds.
#[test]
#[ignore = "needs PostgreSQL/MariaDB; run by scripts/test-servers"]
fn the_full_flow_holds_on_both_servers() {
    let _serial = serial();
    let cases: [(Kind, &str, &[&str]); 3] = [
        (Kind::Postgres, "postgres", &[]),
        (Kind::Mysql, "mysql-innodb-rc", &[]),
        (
            Kind::Mysql,
            "mysql-innodb-rc",
            &["--claim", "skip-locked", "--runbuilds", "2"],
        ),
    ];
    for (i, (kind, preset, extra)) in cases.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let mut args = vec![
            "--preset",
            preset,
            "--clients",
            "2",
            "--num",
            "5",
            "--sleep",
            "100ms",
            "--duration",
            "10s",
            "--events-per-build",
            "200",
        ];
        args.extend_from_slice(extra);
        let r = run_on(kind, &format!("flow_{i}"), &out, &args);
        assert_eq!(r["backend"], kind.as_str(), "{preset}");
        let version = r["environment"]["server_version"].as_str().unwrap_or("");
        match kind {
            Kind::Postgres => assert!(version.starts_with("PostgreSQL"), "{version}"),
            _ => assert!(
                version.contains("MariaDB") || version.contains("MySQL"),
                "{version}"
            ),
        }
        for name in ["webui", "runbuilds", "buildinfohelper"] {
            assert!(count(process(&r, name), &["ok"]) > 0, "{name} worked: {r}");
        }
        for p in r["processes"].as_array().unwrap() {
            assert_eq!(count(p, &["gave_up"]), 0, "{preset} {extra:?}: {p}");
        }
        assert_data_whole(&r);
        let w = &r["queue_wait_ms"];
        assert!(
            w["p50"].is_number() && w["p99"].is_number() && w["max"].is_number(),
            "{w}"
        );
    }
}

/// The 9-hour poller, in 20 s: REPEATABLE READ and a poll inside one
/// transaction leave requests queued while environments are free; READ
/// COMMITTED claims them on the same load. The trace shows the stale reads.
#[test]
#[ignore = "needs PostgreSQL/MariaDB; run by scripts/test-servers"]
fn a_repeatable_read_poller_goes_stale_and_read_committed_does_not() {
    let _serial = serial();
    let light = [
        "--clients",
        "1",
        "--num",
        "1",
        "--sleep",
        "1s",
        "--duration",
        "20s",
        "--events-per-build",
        "200",
    ];
    let dir = tempfile::tempdir().unwrap();
    let rr_out = dir.path().join("rr");
    let mut args = vec!["--preset", "mysql-innodb-rr-poll"];
    args.extend_from_slice(&light);
    let rr = run_on(Kind::Mysql, "rr_poll", &rr_out, &args);
    let rc_out = dir.path().join("rc");
    let mut args = vec!["--preset", "mysql-innodb-rc"];
    args.extend_from_slice(&light);
    let rc = run_on(Kind::Mysql, "rc", &rc_out, &args);

    assert_eq!(rr["settings"]["isolation"], "repeatable-read");
    assert_eq!(rr["settings"]["poll_txn"], true);
    let stale = count(&rr, &["check", "queued_while_free"]);
    assert!(
        stale > 0,
        "requests left queued while free under RR: {}",
        rr["check"]
    );
    assert_eq!(
        count(&rc, &["check", "queued_while_free"]),
        0,
        "RC claims them: {}",
        rc["check"]
    );
    let p50 = |r: &Value| r["queue_wait_ms"]["p50"].as_f64().unwrap();
    assert!(
        p50(&rr) > 3.0 * p50(&rc),
        "queue wait p50: RR {} ms against RC {} ms",
        p50(&rr),
        p50(&rc)
    );

    // The trace: the poller saw the same newest request again and again in
    // one transaction while webui committed new ones in between.
    let polls: Vec<_> = schema::trace::read_trace_all(&rr_out.join("trace-runbuilds.jsonl"))
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == schema::trace::POLL_KIND)
        .collect();
    let creates: Vec<i64> = schema::trace::read_trace(&rr_out.join("trace-webui.jsonl"))
        .unwrap()
        .into_iter()
        .filter(|e| e.outcome == "commit" && e.op == "create_request")
        .map(|e| e.end_us)
        .collect();
    let stale_pairs = polls
        .windows(2)
        .filter(|w| {
            let (a, b) = (&w[0], &w[1]);
            a.txn == b.txn
                && a.seen.as_ref().map(|s| s.max_request_id)
                    == b.seen.as_ref().map(|s| s.max_request_id)
                && creates
                    .iter()
                    .any(|t| *t > a.wait_start_us && *t < b.wait_start_us)
        })
        .count();
    assert!(
        stale_pairs > 0,
        "two polls of one transaction saw the same newest request across a commit \
         of webui ({} polls, {} creates)",
        polls.len(),
        creates.len()
    );
}

/// MyISAM ignores the ROLLBACK of the incremental booking loop: the partial
/// bookings stay, `check` counts them, and MySQL's warning 1196 is counted.
/// InnoDB on the same load leaves none.
#[test]
#[ignore = "needs PostgreSQL/MariaDB; run by scripts/test-servers"]
fn myisam_keeps_partial_bookings_and_innodb_does_not() {
    let _serial = serial();
    let load = [
        "--preset",
        "mysql-myisam",
        "--needs-mix",
        "2",
        "--clients",
        "2",
        "--num",
        "1",
        "--sleep",
        "200ms",
        "--duration",
        "20s",
        "--events-per-build",
        "200",
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut totals = Vec::new();
    for engine in ["myisam", "innodb"] {
        let out = dir.path().join(engine);
        let mut args = load.to_vec();
        args.extend_from_slice(&["--mysql-engine", engine]);
        let r = run_on(Kind::Mysql, engine, &out, &args);
        assert_eq!(r["settings"]["mysql_engine"], engine);
        assert_eq!(r["load"]["needs_mix"], 2);
        let runbuilds = process(&r, "runbuilds");
        assert!(
            count(runbuilds, &["rolled_back"]) > 0,
            "the loop ran out and rolled back under {engine}: {runbuilds}"
        );
        totals.push((
            count(&r, &["check", "leaked_partial_bookings"]),
            count(runbuilds, &["rollbacks_not_undone"]),
        ));
    }
    let (myisam, innodb) = (totals[0], totals[1]);
    assert!(myisam.0 > 0, "MyISAM kept partial bookings: {myisam:?}");
    assert!(myisam.1 > 0, "warning 1196 read after ROLLBACK: {myisam:?}");
    assert_eq!(innodb, (0, 0), "InnoDB undid them");
}

/// PostgreSQL REPEATABLE READ: two schedulers' read-then-write claims
/// collide on the request row and fail with the real 40001; with the retry
/// they turn into latency and nothing is lost; without it they give up.
#[test]
#[ignore = "needs PostgreSQL/MariaDB; run by scripts/test-servers"]
fn postgres_repeatable_read_claims_fail_with_40001_and_the_retry_cures_them() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    for retry in ["backoff", "none"] {
        let out = dir.path().join(retry);
        let r = run_on(
            Kind::Postgres,
            &format!("rr_{retry}"),
            &out,
            &[
                "--preset",
                "postgres-rr",
                "--retry",
                retry,
                "--runbuilds",
                "2",
                "--clients",
                "2",
                "--num",
                "5",
                "--sleep",
                "100ms",
                "--duration",
                "15s",
                "--events-per-build",
                "200",
            ],
        );
        let schedulers = ["runbuilds", "runbuilds-2"].map(|n| process(&r, n));
        let serialization: u64 = schedulers
            .iter()
            .map(|p| count(p, &["failed", "serialization"]))
            .sum();
        assert!(serialization > 0, "40001 under {retry}: {}", r["processes"]);
        let gave_up: u64 = schedulers.iter().map(|p| count(p, &["gave_up"])).sum();
        if retry == "backoff" {
            assert_eq!(gave_up, 0, "every 40001 retried");
            assert_data_whole(&r);
        } else {
            assert!(gave_up > 0, "without a retry they give up");
            assert_eq!(count(&r, &["check", "double_claimed"]), 0);
            assert_eq!(count(&r, &["check", "lost"]), 0);
        }
        let trace = schema::trace::read_trace(&out.join("trace-runbuilds.jsonl")).unwrap();
        assert!(
            trace
                .iter()
                .any(|e| e.server_code.as_deref() == Some("40001")),
            "the trace keeps the real SQLSTATE"
        );
    }
}

/// Bad URLs, a server that is down, and wrong credentials: one clear line
/// each, a non-zero exit, no panic.
#[test]
#[ignore = "needs PostgreSQL/MariaDB; run by scripts/test-servers"]
fn bad_urls_down_servers_and_wrong_credentials_get_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("oracle://u:p@h/db", "oracle"),
        (
            "postgres://locklab:locklab@127.0.0.1:1/lab_cli_x",
            "refused",
        ),
        ("mysql://locklab:locklab@127.0.0.1:1/lab_cli_x", "127.0.0.1"),
        (
            "postgres://locklab:wrong@127.0.0.1:5432/lab_cli_x",
            "password",
        ),
        (
            "mysql://locklab:wrong@127.0.0.1:3306/lab_cli_x",
            "Access denied",
        ),
    ];
    for (url, wanted) in cases {
        for cmd in [
            vec!["migrate", "--database-url", url],
            vec!["check", "--database-url", url],
        ] {
            let o = locklab(&cmd, dir.path());
            let (_, stderr) = text(&o);
            assert!(!o.status.success(), "{cmd:?} failed");
            assert!(!stderr.contains("panicked"), "{cmd:?}: {stderr}");
            let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            assert_eq!(lines.len(), 1, "one line for {cmd:?}: {stderr}");
            assert!(lines[0].contains(wanted), "{wanted:?} in {stderr}");
            assert!(
                !lines[0].contains(":wrong@"),
                "the password is masked: {stderr}"
            );
        }
    }
}
