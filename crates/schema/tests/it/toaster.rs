//! Toaster's shapes on two real connections to a temp file, as toaster-facts.md
//! predicts them, measured: what SQLite does is read back from the traces and
//! the stats, never assumed. Each test prints what it measured.
//!
//! - rollback journal: a connection holds RESERVED while runbuilds'
//!   `select_environment` reads, then saves;
//! - failed sync: the same collision with buildinfohelper's manual-mode
//!   transaction as the other writer;
//! - WAL: another connection commits after `select_environment`'s read;
//! - with no environment free, `postpone` never fails with busy_upgrade or
//!   busy_snapshot.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use schema::db::LabConn;
use schema::error::{LockClass, OpError};
use schema::models::{BuildRequest, Environment, NewRequest, Project};
use schema::ops::Lab;
use schema::settings::{JournalMode, RetryPolicy, TxnMode};
use schema::stats::ProcessReport;
use schema::strategy::claim::{toaster, ClaimCtx};
use schema::strategy::commit::toaster_sync::ToasterSync;
use schema::strategy::commit::{Commit, IngestCtx};
use schema::stream::generate;
use schema::trace::{read_trace, Trace, TraceEvent};
use schema::types::{EventKind, RequestId};

use crate::{policy, serial, TestDb};

const LONG: Duration = Duration::from_secs(60);

/// Polls `f` until it is true, or panics after `LONG`.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + LONG;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A process of the test: its lab (stats, trace, stop flag) and a connection
/// whose busy handler stops with it.
struct Proc {
    lab: Lab,
    conn: LabConn,
    trace: std::path::PathBuf,
}

fn process(db: &TestDb, name: &str, timeout_ms: u64, retry: RetryPolicy) -> Proc {
    let trace = db.dir.path().join(format!("trace-{name}.jsonl"));
    let lab = Lab::new(name)
        .with_trace(Some(Arc::new(Trace::create(&trace, name).unwrap())))
        .with_retry(retry, Duration::from_secs(30));
    lab.stats
        .set_busy_timeout(Duration::from_millis(timeout_ms));
    let policy = schema::db::Policy {
        stop: lab.stop_flag(),
        ..policy(timeout_ms, TxnMode::Deferred)
    };
    let conn = LabConn::open(&db.target, Arc::new(policy), false).unwrap();
    Proc { lab, conn, trace }
}

impl Proc {
    fn ctx(&self) -> ClaimCtx {
        ClaimCtx {
            lab: self.lab.clone(),
            lease: Duration::from_secs(10),
        }
    }

    fn events(&self) -> Vec<TraceEvent> {
        self.lab.trace.as_ref().unwrap().flush().unwrap();
        read_trace(&self.trace).unwrap()
    }
}

/// Failed attempts of `op` so far.
fn failures(lab: &Lab, op: &str) -> u64 {
    lab.stats
        .snapshot()
        .by_op
        .get(op)
        .map(|o| o.failed.values().sum())
        .unwrap_or(0)
}

/// Stops a process: its retry loops end and its busy handler gives up.
fn stop(lab: &Lab) {
    lab.stop_now();
}

fn queued_request(conn: &mut LabConn) -> RequestId {
    conn.write_txn("test", &mut |tx| {
        let project = Project::get_or_create(tx.conn(), "toaster")?;
        Ok(BuildRequest::create(
            tx.conn(),
            &NewRequest {
                project_id: project,
                needs: &Default::default(),
                priority: 0,
                submitted_by: "test",
                client_request_id: None,
                build_id: None,
            },
        )?)
    })
    .unwrap()
    .0
}

fn stalls_of(r: &ProcessReport, op: &str) -> Vec<schema::stats::Stall> {
    r.stalls.iter().filter(|s| s.op == op).cloned().collect()
}

/// Rollback journal: H holds RESERVED (an open write) while runbuilds'
/// select_environment reads the free environments, then saves one locked.
#[test]
fn rollback_journal_select_environment_against_a_reserved_lock() {
    let _serial = serial();
    let db = TestDb::new(JournalMode::Delete);
    let mut h = process(&db, "holder", 2000, RetryPolicy::None);
    let mut r = process(&db, "runbuilds", 20_000, RetryPolicy::Toaster);
    let request = queued_request(&mut r.conn);

    let (h_result, r_result) = std::thread::scope(|s| {
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let r_lab = r.lab.clone();
        let r_failures = || failures(&r_lab, "select_environment");
        let h_lab = h.lab.clone();
        let h_conn = &mut h.conn;
        let holder = s.spawn(move || {
            h_lab.op("hold", |op| {
                op.block(h_conn, |op, conn| {
                    op.save(
                        conn,
                        |tx| Ok(tx.inserted(|c| Project::create(c, "holder"))?),
                    )?;
                    held_tx.send(()).unwrap();
                    // Commit only once runbuilds read and was refused.
                    go_rx.recv().unwrap();
                    Ok(())
                })
            })
        });
        held_rx.recv().unwrap();
        let ctx = r.ctx();
        let r_conn = &mut r.conn;
        let runbuilds = s.spawn(move || toaster::select_environment(&ctx, r_conn, request));
        wait_until("runbuilds' first failure", || r_failures() >= 1);
        // The holder's block now ends: its COMMIT needs runbuilds' SHARED gone.
        go_tx.send(()).unwrap();
        (holder.join().unwrap(), runbuilds.join().unwrap())
    });
    let h_events = h.events();
    let r_events = r.events();
    let commit = h_events
        .iter()
        .find(|e| e.op == "hold" && e.kind == "txn")
        .expect("the holder's transaction is traced");
    let r_fails: Vec<&TraceEvent> = r_events
        .iter()
        .filter(|e| e.op == "select_environment" && e.outcome == "failed")
        .collect();
    let r_done = r_events
        .iter()
        .rfind(|e| e.op == "select_environment" && e.outcome == "commit")
        .cloned();
    println!(
        "measured (rollback): runbuilds' save failed {} times ({:?}); the holder's COMMIT ended {} \
         with class {:?} after waiting {:?} ms (its busy timeout is 2000 ms); runbuilds' block \
         ended {:?} ({:.0} ms after the holder's commit)",
        r_fails.len(),
        r_fails.iter().map(|e| e.class).collect::<Vec<_>>(),
        commit.outcome,
        commit.class,
        commit.waited_ms,
        r_done.as_ref().map(|e| e.outcome.clone()),
        r_done
            .as_ref()
            .map(|e| (e.end_us - commit.end_us) as f64 / 1000.0)
            .unwrap_or(f64::NAN)
    );
    // busy_upgrade at once: the busy handler never ran for it.
    assert!(!r_fails.is_empty());
    for e in &r_fails {
        assert_eq!(e.class, Some(LockClass::BusyUpgrade), "{e:?}");
        assert_eq!(e.waited_ms, Some(0.0), "refused at once: {e:?}");
        assert_eq!(e.kind, "savepoint", "the retry is a savepoint: {e:?}");
    }
    // Every retry ran inside one open transaction.
    let txn = r_fails[0].txn;
    assert!(txn != 0);
    assert!(r_fails.iter().all(|e| e.txn == txn), "{r_fails:?}");
    // What the holder's COMMIT did while runbuilds kept its SHARED lock.
    match &h_result {
        Err(OpError::Db(e)) => {
            assert_eq!(e.class, LockClass::BusyTimeout, "{e}");
            assert_eq!(commit.phase.as_deref(), Some("commit"));
        }
        Ok(()) => panic!(
            "the holder committed while runbuilds held SHARED: not what SQLite's rules say; {commit:?}"
        ),
        Err(e) => panic!("{e}"),
    }
    // runbuilds got the environment only after the holder gave up.
    let env = r_result.expect("select_environment succeeds once the holder rolled back");
    assert!(env.is_some());
    let done = r_done.expect("runbuilds' block committed");
    assert!(done.end_us >= commit.end_us);
    // Three or more retries with one class inside one transaction: a stall.
    let stats = r.lab.stats.snapshot();
    assert!(
        r_fails.len() > 3,
        "the retries span the holder's busy timeout"
    );
    let stalls = stalls_of(&stats, "select_environment");
    assert_eq!(stalls.len(), 1, "{:?}", stats.stalls);
    assert_eq!(stalls[0].class.as_deref(), Some("busy_upgrade"));
    assert!(
        stats.identity_violations().is_empty(),
        "{:?}",
        stats.identity_violations()
    );
}

/// A failed sync: buildinfohelper's manual-mode transaction holds RESERVED
/// after a bulk insert while select_environment reads, then saves.
#[test]
fn failed_sync_against_select_environment() {
    let _serial = serial();
    let db = TestDb::new(JournalMode::Delete);
    let mut b = process(&db, "buildinfohelper", 300, RetryPolicy::Toaster);
    let mut r = process(&db, "runbuilds", 300, RetryPolicy::Toaster);
    // A claimed build for buildinfohelper to write to, then a second request
    // for runbuilds to place.
    let first = queued_request(&mut r.conn);
    let ctx = r.ctx();
    toaster::mark_inprogress(&ctx, &mut r.conn, first).unwrap();
    let env = toaster::select_environment(&ctx, &mut r.conn, first)
        .unwrap()
        .unwrap();
    let build = toaster::assign_environment(&ctx, &mut r.conn, first, None, env).unwrap();
    let second = queued_request(&mut r.conn);
    toaster::mark_inprogress(&ctx, &mut r.conn, second).unwrap();

    let notify = || {};
    let packages: Vec<_> = generate(7, 400)
        .into_iter()
        .filter(|e| e.kind == EventKind::Package)
        .take(3)
        .collect();
    assert!(!packages.is_empty());
    let mut policy = ToasterSync::default();
    let b_lab = b.lab.clone();
    let bctx = IngestCtx {
        lab: &b_lab,
        lease: Duration::from_secs(10),
        event_delay: Duration::ZERO,
        notify: &notify,
    };
    policy.start(&mut b.conn);
    ToasterSync::sync(&bctx, &mut b.conn); // the first sync: manual mode
    for p in packages {
        policy.event(&bctx, &mut b.conn, build, p);
    }
    policy.flush(&bctx, &mut b.conn, build); // bulk_packages: BEGIN, INSERT, open
    assert!(b.conn.in_transaction() && b.conn.holds_write_lock());

    let r_lab = r.lab.clone();
    let syncs_failed = std::thread::scope(|s| {
        let r_conn = &mut r.conn;
        let r_ctx = ctx.clone();
        let runbuilds = s.spawn(move || toaster::select_environment(&r_ctx, r_conn, second));
        wait_until("runbuilds' first failure", || {
            failures(&r_lab, "select_environment") >= 1
        });
        // buildinfohelper's syncs: each COMMIT waits for runbuilds' SHARED.
        for _ in 0..4 {
            ToasterSync::sync(&bctx, &mut b.conn);
        }
        let failed = failures(&b.lab, "sync");
        let still_open = b.conn.in_transaction();
        // The standoff, if it is one: stop both, as a drain's SIGTERM would.
        stop(&b.lab);
        stop(&r_lab);
        let r_result = runbuilds.join().unwrap();
        (failed, still_open, r_result)
    });
    let (failed, still_open, r_result) = syncs_failed;
    policy.interrupt(&bctx, &mut b.conn);
    let bs = b.lab.stats.snapshot();
    let rs = r.lab.stats.snapshot();
    println!(
        "measured (failed sync): {failed} of 4 syncs failed {:?}, transaction still open: \
         {still_open}; runbuilds' save failed {} times {:?} and ended {:?}; stalls: \
         buildinfohelper {:?}, runbuilds {:?}",
        bs.by_op.get("sync").map(|o| &o.failed),
        failures(&r.lab, "select_environment"),
        rs.by_op.get("select_environment").map(|o| &o.failed),
        r_result.as_ref().map(|_| "ok").map_err(|e| e.to_string()),
        bs.stalls,
        rs.stalls
    );
    // What SQLite did: every sync's COMMIT failed after the busy timeout, and
    // runbuilds, retrying inside its block, never got the lock.
    assert_eq!(failed, 4, "every sync failed: {:?}", bs.by_op);
    assert_eq!(
        bs.by_op["sync"].failed.keys().collect::<Vec<_>>(),
        ["busy_timeout"]
    );
    assert!(still_open, "a failed sync leaves its transaction open");
    assert!(
        r_result.is_err(),
        "runbuilds never got the lock: {r_result:?}"
    );
    // Reported as a stall on both sides.
    let b_stall = stalls_of(&bs, "sync");
    assert_eq!(b_stall.len(), 1, "{:?}", bs.stalls);
    assert_eq!(b_stall[0].class.as_deref(), Some("busy_timeout"));
    assert!(b_stall[0].retries >= 3);
    let r_stall = stalls_of(&rs, "select_environment");
    assert_eq!(r_stall.len(), 1, "{:?}", rs.stalls);
    assert_eq!(r_stall[0].class.as_deref(), Some("busy_upgrade"));
    assert!(r_stall[0].abandoned, "{:?}", r_stall[0]);
    assert!(
        !b.conn.in_transaction(),
        "the open transaction was rolled back at the stop"
    );
    for s in [&bs, &rs] {
        assert!(
            s.identity_violations().is_empty(),
            "{:?}",
            s.identity_violations()
        );
    }
}

/// WAL: another connection commits after select_environment's read.
#[test]
fn wal_select_environment_after_another_commit() {
    let _serial = serial();
    let db = TestDb::new(JournalMode::Wal);
    let mut h = process(&db, "holder", 2000, RetryPolicy::None);
    let mut r = process(&db, "runbuilds", 20_000, RetryPolicy::Toaster);
    let request = queued_request(&mut r.conn);
    h.conn.execute_raw("BEGIN IMMEDIATE").unwrap();
    h.conn
        .execute_raw("INSERT INTO project (name, created_at) VALUES ('holder', 0)")
        .unwrap();

    let r_lab = r.lab.clone();
    let result = std::thread::scope(|s| {
        let ctx = r.ctx();
        let r_conn = &mut r.conn;
        let runbuilds = s.spawn(move || toaster::select_environment(&ctx, r_conn, request));
        wait_until("runbuilds' first failure", || {
            failures(&r_lab, "select_environment") >= 1
        });
        // The other connection commits after runbuilds' read.
        h.conn.execute_raw("COMMIT").unwrap();
        wait_until("three more failures", || {
            failures(&r_lab, "select_environment") >= 4
        });
        stop(&r_lab);
        runbuilds.join().unwrap()
    });
    let events = r.events();
    let fails: Vec<&TraceEvent> = events
        .iter()
        .filter(|e| e.op == "select_environment" && e.outcome == "failed")
        .collect();
    println!(
        "measured (WAL): {:?}",
        fails.iter().map(|e| (e.class, e.txn)).collect::<Vec<_>>()
    );
    assert!(result.is_err(), "the snapshot never moves: {result:?}");
    // The first refusal came while the other connection held the lock; every
    // one after its commit is busy_snapshot, all in one transaction.
    assert!(fails.len() >= 4);
    assert!(fails.iter().all(|e| e.txn == fails[0].txn));
    for e in &fails[1..] {
        assert_eq!(e.class, Some(LockClass::BusySnapshot), "{e:?}");
    }
    let stats = r.lab.stats.snapshot();
    let stall = stalls_of(&stats, "select_environment");
    assert_eq!(stall.len(), 1, "{:?}", stats.stalls);
    assert_eq!(stall[0].class.as_deref(), Some("busy_snapshot"));
    assert!(stall[0].retries >= 3);
}

/// With no environment free, select_environment rolls back and the postpone
/// is a save of its own: under a writer that never stops, it can wait for the
/// lock (busy_timeout) but never fails with busy_upgrade or busy_snapshot.
#[test]
fn postpone_is_an_autocommit_save() {
    let _serial = serial();
    for journal in [JournalMode::Delete, JournalMode::Wal] {
        let db = TestDb::new(journal);
        let mut r = process(&db, "runbuilds", 50, RetryPolicy::None);
        let mut w = process(&db, "writer", 50, RetryPolicy::None);
        // Every environment is taken.
        r.conn
            .execute_raw("UPDATE build_environment SET lock_state = 'running'")
            .unwrap();
        let request = queued_request(&mut r.conn);
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let w_conn = &mut w.conn;
            let stop = &stop;
            s.spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let _ = w_conn.write_txn("test", &mut |tx| {
                        Ok(tx.inserted(|c| Project::create(c, &format!("w{n}")))?)
                    });
                }
            });
            let ctx = r.ctx();
            for _ in 0..300 {
                if toaster::mark_inprogress(&ctx, &mut r.conn, request).is_err() {
                    continue;
                }
                if let Ok(None) = toaster::select_environment(&ctx, &mut r.conn, request) {
                    let _ = toaster::postpone(&ctx, &mut r.conn, request);
                }
            }
            stop.store(true, Ordering::SeqCst);
        });
        let stats = r.lab.stats.snapshot();
        let postpone = &stats.by_op["postpone"];
        let select = &stats.by_op["select_environment"];
        println!(
            "measured ({journal}): postpone {} ops, failed {:?}; select_environment {} ops, \
             {} rolled back, failed {:?}",
            postpone.ops, postpone.failed, select.ops, select.rolled_back, select.failed
        );
        assert!(postpone.ops > 0);
        assert!(
            !postpone.failed.contains_key("busy_upgrade")
                && !postpone.failed.contains_key("busy_snapshot"),
            "{journal}: {:?}",
            postpone.failed
        );
        assert!(
            select.rolled_back > 0 && select.ok == 0,
            "{journal}: {select:?}"
        );
        assert!(Environment::free(r.conn.diesel()).unwrap().is_empty());
        assert!(
            stats.identity_violations().is_empty(),
            "{:?}",
            stats.identity_violations()
        );
    }
}
