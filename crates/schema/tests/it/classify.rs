//! Lock-error classes taken from the real code, on two real connections.

use std::sync::mpsc;
use std::time::Duration;

use schema::db::{AttemptFailure, LabConn, Policy, Tx};
use schema::error::{LockClass, TxError};
use schema::models::Project;
use schema::settings::{BusyWait, JournalMode, TxnMode};

use crate::{policy, serial, TestDb};

/// Holds the write lock on `conn`: BEGIN IMMEDIATE and one insert.
fn hold_write_lock(conn: &mut LabConn, name: &str) {
    conn.execute_raw("BEGIN IMMEDIATE").unwrap();
    conn.execute_raw(&format!(
        "INSERT INTO project (name, created_at) VALUES ('{name}', 0)"
    ))
    .unwrap();
}

fn read_then_write(tx: &mut Tx<'_>, name: &str) -> Result<(), TxError> {
    Project::count(tx.conn())?;
    Project::get_or_create(tx.conn(), name)?;
    Ok(())
}

fn failure_class(conn: &mut LabConn, name: &str) -> (LockClass, u32, Duration) {
    let err = conn
        .write_txn("test", &mut |tx| read_then_write(tx, name))
        .expect_err("the write must fail");
    assert!(
        !conn.in_transaction(),
        "the entry point rolls back a failed attempt"
    );
    match err.error {
        AttemptFailure::Db(e) => (e.class, e.busy_calls, e.waited),
        AttemptFailure::Aborted(r) => panic!("aborted: {r}"),
    }
}

fn upgrade_refused(journal: JournalMode) {
    let _serial = serial();
    let db = TestDb::new(journal);
    let mut holder = db.conn(policy(200, TxnMode::Deferred));
    let mut reader = db.conn(policy(200, TxnMode::Deferred));
    hold_write_lock(&mut holder, "holder");
    let (class, calls, waited) = failure_class(&mut reader, "reader");
    assert_eq!(class, LockClass::BusyUpgrade, "journal={journal}");
    assert_eq!(
        calls, 0,
        "the busy handler never runs for an upgrade refusal"
    );
    assert!(waited < Duration::from_millis(200));
    holder.execute_raw("ROLLBACK").unwrap();
}

#[test]
fn deferred_read_then_write_is_busy_upgrade_in_rollback_journal() {
    upgrade_refused(JournalMode::Delete);
}

#[test]
fn deferred_read_then_write_is_busy_upgrade_in_wal() {
    upgrade_refused(JournalMode::Wal);
}

#[test]
fn stale_wal_snapshot_is_busy_snapshot() {
    let _serial = serial();
    let db = TestDb::new(JournalMode::Wal);
    let mut other = db.conn(policy(200, TxnMode::Deferred));
    let mut conn = db.conn(policy(200, TxnMode::Deferred));
    let err = conn
        .write_txn("test", &mut |tx| {
            Project::count(tx.conn())?; // the snapshot starts here
            other
                .execute_raw("INSERT INTO project (name, created_at) VALUES ('other', 0)")
                .unwrap();
            Project::get_or_create(tx.conn(), "mine")?;
            Ok(())
        })
        .expect_err("stale snapshot");
    match err.error {
        AttemptFailure::Db(e) => {
            assert_eq!(e.class, LockClass::BusySnapshot);
            assert_eq!(e.extended_code, 517);
            assert_eq!(e.busy_calls, 0);
        }
        AttemptFailure::Aborted(r) => panic!("aborted: {r}"),
    }
    assert!(!conn.in_transaction());
}

#[test]
fn held_write_lock_past_the_timeout_is_busy_timeout() {
    let _serial = serial();
    for journal in [JournalMode::Delete, JournalMode::Wal] {
        let db = TestDb::new(journal);
        let mut holder = db.conn(policy(200, TxnMode::Deferred));
        let mut writer = db.conn(policy(200, TxnMode::Deferred));
        assert_eq!(writer.busy_timeout(), Duration::from_millis(200));
        hold_write_lock(&mut holder, "holder");
        // a write first: the handler runs, waits the timeout, gives up
        let err = writer
            .write_txn("test", &mut |tx| Ok(Project::create(tx.conn(), "writer")?))
            .expect_err("timeout");
        match err.error {
            AttemptFailure::Db(e) => {
                assert_eq!(e.class, LockClass::BusyTimeout, "journal={journal}");
                assert!(e.busy_calls > 0);
                assert!(
                    e.waited >= Duration::from_millis(200),
                    "waited {:?}",
                    e.waited
                );
            }
            AttemptFailure::Aborted(r) => panic!("aborted: {r}"),
        }
        // the same in autocommit mode
        let err = writer
            .autocommit("test", &mut |tx| Ok(Project::create(tx.conn(), "writer")?))
            .expect_err("timeout");
        match err.error {
            AttemptFailure::Db(e) => assert_eq!(e.class, LockClass::BusyTimeout),
            AttemptFailure::Aborted(r) => panic!("aborted: {r}"),
        }
        assert!(writer.total_lock_wait() >= Duration::from_millis(400));
        holder.execute_raw("ROLLBACK").unwrap();
    }
}

/// `fair` retries on a short fixed interval instead of SQLite's growing
/// sleeps, and still gives up at the timeout, as busy_timeout.
#[test]
fn fair_busy_wait_retries_often_and_still_times_out() {
    let _serial = serial();
    let db = TestDb::new(JournalMode::Wal);
    let mut holder = db.conn(policy(200, TxnMode::Deferred));
    hold_write_lock(&mut holder, "holder");
    let mut calls = Vec::new();
    for wait in [BusyWait::Sqlite, BusyWait::Fair(Duration::from_millis(1))] {
        let mut writer = db.conn(Policy {
            busy_wait: wait,
            ..policy(200, TxnMode::Immediate)
        });
        let err = writer
            .write_txn("test", &mut |tx| Ok(Project::create(tx.conn(), "writer")?))
            .expect_err("timeout");
        match err.error {
            AttemptFailure::Db(e) => {
                assert_eq!(e.class, LockClass::BusyTimeout, "{wait}");
                assert!(
                    e.waited >= Duration::from_millis(200),
                    "{wait}: {:?}",
                    e.waited
                );
                calls.push(e.busy_calls);
            }
            AttemptFailure::Aborted(r) => panic!("aborted: {r}"),
        }
    }
    // SQLite's schedule fits 10 sleeps in 200 ms (1+2+5+…+50, the last cut);
    // 1 ms sleeps fit up to 200, fewer when each oversleeps on a busy machine.
    assert!((2..=12).contains(&calls[0]), "sqlite: {} calls", calls[0]);
    assert!(
        calls[1] >= 3 * calls[0],
        "fair: {} calls, sqlite {}",
        calls[1],
        calls[0]
    );
    holder.execute_raw("ROLLBACK").unwrap();
}

/// With immediate transactions the read-then-write waits at BEGIN, and succeeds
/// once the holder commits.
#[test]
fn immediate_mode_waits_and_succeeds() {
    let _serial = serial();
    for journal in [JournalMode::Delete, JournalMode::Wal] {
        let db = TestDb::new(journal);
        let mut conn = db.conn(policy(5000, TxnMode::Immediate));
        let (locked_tx, locked_rx) = mpsc::channel();
        let target = db.target.clone();
        let holder = std::thread::spawn(move || {
            let mut holder = LabConn::open(
                &target,
                std::sync::Arc::new(crate::policy(200, TxnMode::Deferred)),
                false,
            )
            .unwrap();
            hold_write_lock(&mut holder, "holder");
            locked_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            holder.execute_raw("COMMIT").unwrap();
        });
        locked_rx.recv().unwrap();
        conn.write_txn("test", &mut |tx| read_then_write(tx, "reader"))
            .map_err(|e| e.error)
            .unwrap();
        holder.join().unwrap();
        // Another writer cannot commit between our read and our write:
        // BEGIN IMMEDIATE made us the writer before the read, so it waits for
        // us (and, with its short timeout, gives up) instead of staling us.
        let mut other = db.conn(policy(100, TxnMode::Deferred));
        let mut other_class = None;
        conn.write_txn("test", &mut |tx| {
            Project::count(tx.conn())?;
            if other_class.is_none() {
                let err = other
                    .autocommit("test", &mut |otx| {
                        Ok(Project::get_or_create(otx.conn(), "late")?)
                    })
                    .expect_err("the other writer must wait for us");
                other_class = match err.error {
                    AttemptFailure::Db(e) => Some(e.class),
                    AttemptFailure::Aborted(r) => panic!("aborted: {r}"),
                };
            }
            Project::get_or_create(tx.conn(), "mine")?;
            Ok(())
        })
        .map_err(|e| e.error)
        .unwrap();
        assert_eq!(
            other_class,
            Some(LockClass::BusyTimeout),
            "journal={journal}"
        );
    }
}

/// Two connections from one pool, used on one thread: each failure is classified
/// on its own handle, not on "the last one opened".
#[test]
fn pooled_connections_on_one_thread_keep_their_own_codes() {
    let _serial = serial();
    let db = TestDb::new(JournalMode::Wal);
    let pool = schema::db::build_pool(&db.target, policy(200, TxnMode::Deferred), 2).unwrap();
    let mut a = pool.get().unwrap();
    let mut b = pool.get().unwrap();

    // upgrade refusal on `a` while `b` holds the lock, then the reverse
    hold_write_lock(&mut b, "b");
    assert_eq!(failure_class(&mut a, "a").0, LockClass::BusyUpgrade);
    b.execute_raw("ROLLBACK").unwrap();
    hold_write_lock(&mut a, "a");
    assert_eq!(failure_class(&mut b, "b").0, LockClass::BusyUpgrade);
    a.execute_raw("ROLLBACK").unwrap();

    // stale snapshot on `b` caused by `a` (opened after b? no: pooled order)
    let err = b
        .write_txn("test", &mut |tx| {
            Project::count(tx.conn())?;
            a.execute_raw("INSERT INTO project (name, created_at) VALUES ('a2', 0)")
                .unwrap();
            Project::get_or_create(tx.conn(), "b2")?;
            Ok(())
        })
        .expect_err("stale");
    assert!(matches!(err.error, AttemptFailure::Db(ref e) if e.class == LockClass::BusySnapshot));

    // timeout on `a`, while `b`'s handle last saw a different error
    hold_write_lock(&mut b, "b3");
    let err = a
        .autocommit("test", &mut |tx| {
            Ok(Project::get_or_create(tx.conn(), "a3")?)
        })
        .expect_err("timeout");
    assert!(matches!(err.error, AttemptFailure::Db(ref e) if e.class == LockClass::BusyTimeout));
    b.execute_raw("ROLLBACK").unwrap();
}

#[test]
fn constraint_violation_is_classified() {
    let _serial = serial();
    let db = TestDb::new(JournalMode::Wal);
    let mut conn = db.conn(policy(200, TxnMode::Immediate));
    conn.execute_raw("INSERT INTO project (name, created_at) VALUES ('dup', 0)")
        .unwrap();
    let err = conn
        .execute_raw("INSERT INTO project (name, created_at) VALUES ('dup', 0)")
        .expect_err("unique");
    assert_eq!(err.class, LockClass::Constraint);
    let err = conn.execute_raw("UPDATE build_request SET state = 'bogus'");
    assert!(err.is_ok(), "no rows, no violation");
}
