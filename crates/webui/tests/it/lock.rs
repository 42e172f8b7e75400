//! Lock failures answered 503 from real SQLite errors. The test holds the
//! write lock on its own connection (BEGIN IMMEDIATE and a model write) while
//! webui creates; the answer names the class the database really returned.
//! These tests assert classes, never counts of rows.

use std::sync::mpsc;
use std::time::Duration;

use schema::db::{LabConn, Policy};
use schema::models::Project;
use schema::settings::{JournalMode, TxnMode};
use serde_json::json;
use testkit::{get, post_json, wait_for};

use crate::{serial, Web};

const CREATE: &str = "/api/build-requests";
/// Every failed class the report contract lists.
pub const CLASSES: [&str; 9] = [
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

/// Takes SQLite's write lock on a connection of the test's own and keeps it
/// until the connection is rolled back: BEGIN IMMEDIATE, then one write.
pub fn hold_write_lock(web: &Web) -> LabConn {
    let mut holder = web
        .lab
        .conn(Policy {
            txn_mode: TxnMode::Immediate,
            ..Policy::default()
        })
        .unwrap();
    holder.begin().unwrap();
    Project::create(holder.diesel(), "the-test-holds-the-lock").unwrap();
    holder
}

/// Creates while the test holds the write lock and checks the 503: its class,
/// op, Retry-After and JSON shape. Returns waited_ms.
fn refused_while_locked(web: &Web, class: &str) -> f64 {
    // The daemon works before the lock is taken, and the project exists, so
    // the refused create's get_or_create is a read.
    let a = post_json(&web.url(CREATE), &json!({"project": "locked", "count": 1})).unwrap();
    assert_eq!(a.status, 201, "{a:?}");

    let mut holder = hold_write_lock(web);
    let a = post_json(&web.url(CREATE), &json!({"project": "locked", "count": 3})).unwrap();
    holder.rollback();

    assert_eq!(a.status, 503, "{a:?}");
    assert!(a.content_type.starts_with("application/json"), "{a:?}");
    assert!(a.retry_after.is_some(), "Retry-After: {a:?}");
    let v = a.json();
    assert_eq!(v["error"], "database is locked", "{a:?}");
    assert_eq!(v["class"], class, "{a:?}");
    assert_eq!(v["op"], "create_request", "{a:?}");
    assert!(
        !a.body.to_ascii_lowercase().contains("insert"),
        "no SQL text in the answer: {a:?}"
    );
    let waited_ms = v["waited_ms"].as_f64().unwrap();

    // The stats count the failed attempt under its class and the op as given up.
    let stats = web.stats();
    for c in CLASSES {
        assert!(stats["failed"][c].is_u64(), "failed.{c} in {stats}");
    }
    assert!(stats["failed"][class].as_u64().unwrap() >= 1, "{stats}");
    assert!(stats["gave_up"].as_u64().unwrap() >= 1, "{stats}");
    let (ops, ok, gave_up) = (
        stats["ops"].as_u64().unwrap(),
        stats["ok"].as_u64().unwrap(),
        stats["gave_up"].as_u64().unwrap(),
    );
    assert_eq!(ops, ok + gave_up, "ops = ok + gave_up: {stats}");
    let failed: u64 = CLASSES
        .iter()
        .map(|c| stats["failed"][c].as_u64().unwrap())
        .sum();
    assert_eq!(
        failed,
        stats["retried"].as_u64().unwrap() + gave_up,
        "Σ failed = retried + gave_up: {stats}"
    );
    let create = &stats["by_op"]["create_request"];
    assert!(create["gave_up"].as_u64().unwrap() >= 1, "{stats}");
    assert!(create["failed"][class].as_u64().unwrap() >= 1, "{stats}");

    // /metrics shows the same, and the log has one line with class and op.
    let metrics = get(&web.url("/metrics")).unwrap().body;
    let line = format!(
        "locklab_failed_attempts_total{{process=\"webui\",op=\"create_request\",class=\"{class}\"}}"
    );
    assert!(metrics.contains(&line), "{line} in\n{metrics}");
    let needle = format!("class={class}");
    wait_for("the failure's log line", Duration::from_secs(10), || {
        let log = web.child.log_text();
        log.lines()
            .any(|l| l.contains(&needle) && l.contains("op=create_request"))
            .then_some(())
    })
    .unwrap();

    // Once the lock is free the same create goes through.
    let a = post_json(&web.url(CREATE), &json!({"project": "locked", "count": 3})).unwrap();
    assert_eq!(a.status, 201, "after the lock is released: {a:?}");
    waited_ms
}

#[test]
fn autocommit_create_waits_out_the_busy_timeout() {
    let _serial = serial();
    let web = Web::start(
        JournalMode::Delete,
        &["--atomic-requests", "false", "--retry", "none"],
    );
    let waited_ms = refused_while_locked(&web, "busy_timeout");
    assert!(
        waited_ms >= 200.0,
        "the handler waited the timeout: {waited_ms}"
    );
}

/// ATOMIC_REQUESTS with deferred transactions: the view reads the project,
/// then its first write asks for the lock the test holds. SQLite refuses at
/// once, without calling the busy handler, in either journal mode.
fn deferred_atomic_view_is_refused_at_once(journal: JournalMode) {
    let _serial = serial();
    let web = Web::start(
        journal,
        &[
            "--atomic-requests",
            "true",
            "--txn-mode",
            "deferred",
            "--retry",
            "none",
        ],
    );
    let waited_ms = refused_while_locked(&web, "busy_upgrade");
    assert!(
        waited_ms < 200.0,
        "an upgrade refusal never waits out the busy timeout: {waited_ms}"
    );
}

#[test]
fn atomic_deferred_create_is_busy_upgrade_in_rollback_journal() {
    deferred_atomic_view_is_refused_at_once(JournalMode::Delete);
}

#[test]
fn atomic_deferred_create_is_busy_upgrade_in_wal() {
    deferred_atomic_view_is_refused_at_once(JournalMode::Wal);
}

/// The same held lock with immediate transactions: BEGIN IMMEDIATE waits in
/// the busy handler, so the class is busy_timeout, never busy_upgrade.
fn immediate_atomic_view_waits_at_begin(journal: JournalMode) {
    let _serial = serial();
    let web = Web::start(
        journal,
        &[
            "--atomic-requests",
            "true",
            "--txn-mode",
            "immediate",
            "--retry",
            "none",
        ],
    );
    let waited_ms = refused_while_locked(&web, "busy_timeout");
    assert!(
        waited_ms >= 200.0,
        "BEGIN IMMEDIATE waited the timeout: {waited_ms}"
    );
    assert_eq!(web.stats()["failed"]["busy_upgrade"], 0);
}

#[test]
fn atomic_immediate_create_is_busy_timeout_in_wal() {
    immediate_atomic_view_waits_at_begin(JournalMode::Wal);
}

#[test]
fn atomic_immediate_create_is_busy_timeout_in_rollback_journal() {
    immediate_atomic_view_waits_at_begin(JournalMode::Delete);
}

/// A lock held for less than the busy timeout turns into latency, not a
/// failure: the create waits in BEGIN IMMEDIATE and then commits.
#[test]
fn a_lock_released_within_the_timeout_is_waited_for() {
    let _serial = serial();
    let web = Web::start(
        JournalMode::Wal,
        &[
            "--busy-timeout",
            "20s",
            "--atomic-requests",
            "true",
            "--txn-mode",
            "immediate",
        ],
    );
    let (taken_tx, taken_rx) = mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut holder = hold_write_lock(&web);
            taken_tx.send(()).unwrap();
            // Hold the lock while webui waits for it, then let go.
            wait_for("webui to start its create", Duration::from_secs(10), || {
                (web.ops_of("create_request") >= 1).then_some(())
            })
            .unwrap();
            std::thread::sleep(Duration::from_millis(300));
            holder.rollback();
        });
        taken_rx.recv().unwrap();
        let a = post_json(&web.url(CREATE), &json!({"project": "waited", "count": 2})).unwrap();
        assert_eq!(a.status, 201, "{a:?}");
    });
    let stats = web.stats();
    let failed: u64 = CLASSES
        .iter()
        .map(|c| stats["failed"][c].as_u64().unwrap())
        .sum();
    assert_eq!(failed, 0, "no failed attempt: {stats}");
    assert_eq!(stats["gave_up"], 0, "{stats}");
    assert!(web.has_project("waited"));
}

/// Database work runs off the async workers: while more creates than webui
/// has HTTP workers wait for the write lock, reads and the common endpoints
/// still answer. Then the lock is released and every create commits.
#[test]
fn reads_are_served_while_creates_wait_for_the_lock() {
    let _serial = serial();
    let web = Web::start(
        JournalMode::Wal,
        &[
            "--busy-timeout",
            "30s",
            "--atomic-requests",
            "true",
            "--txn-mode",
            "immediate",
        ],
    );
    let mut holder = hold_write_lock(&web);
    let answers = std::thread::scope(|s| {
        let clients: Vec<_> = (0..4)
            .map(|i| {
                let url = web.url(CREATE);
                s.spawn(move || {
                    post_json(
                        &url,
                        &json!({"project": format!("waiting-{i}"), "count": 1}),
                    )
                    .unwrap()
                })
            })
            .collect();
        wait_for("four creates waiting", Duration::from_secs(20), || {
            (web.ops_of("create_request") >= 4).then_some(())
        })
        .unwrap();
        for path in ["/healthz", "/api/build-requests", "/api/environments", "/"] {
            let a = get(&web.url(path)).unwrap();
            assert_eq!(a.status, 200, "{path} while creates wait: {a:?}");
        }
        holder.rollback();
        clients
            .into_iter()
            .map(|c| c.join().unwrap())
            .collect::<Vec<_>>()
    });
    for a in answers {
        assert_eq!(a.status, 201, "{a:?}");
    }
    assert_eq!(web.request_rows(), 4);
}

/// `--retry backoff` reaches the daemon's operations: a lock held past the
/// busy timeout fails the create's first attempts with busy_timeout, the
/// daemon retries them, and the create is answered 201 once the lock is free.
/// Without ATOMIC_REQUESTS each INSERT autocommits and is retried on its own;
/// with it (and IMMEDIATE), the view's BEGIN IMMEDIATE is tried again.
fn backoff_retries_a_create_past_the_busy_timeout(atomic: &str) {
    let _serial = serial();
    let web = Web::start(
        JournalMode::Wal,
        &[
            "--busy-timeout",
            "100ms",
            "--atomic-requests",
            atomic,
            "--txn-mode",
            "immediate",
            "--retry",
            "backoff",
            "--retry-deadline",
            "30s",
        ],
    );
    let (taken_tx, taken_rx) = mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut holder = hold_write_lock(&web);
            taken_tx.send(()).unwrap();
            // Hold the lock until webui has failed an attempt, then let go.
            wait_for("a failed attempt", Duration::from_secs(20), || {
                (web.stats()["failed"]["busy_timeout"].as_u64().unwrap_or(0) >= 1).then_some(())
            })
            .unwrap();
            holder.rollback();
        });
        taken_rx.recv().unwrap();
        let a = post_json(&web.url(CREATE), &json!({"project": "retried", "count": 2})).unwrap();
        assert_eq!(a.status, 201, "retried until the lock was free: {a:?}");
    });
    let stats = web.stats();
    assert!(stats["retried"].as_u64().unwrap() >= 1, "{stats}");
    assert_eq!(stats["gave_up"], 0, "{stats}");
}

#[test]
fn backoff_retries_autocommit_inserts_past_the_busy_timeout() {
    backoff_retries_a_create_past_the_busy_timeout("false");
}

#[test]
fn backoff_retries_an_atomic_views_begin_past_the_busy_timeout() {
    backoff_retries_a_create_past_the_busy_timeout("true");
}
