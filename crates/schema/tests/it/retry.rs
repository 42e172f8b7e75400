//! The retry policies on a real held lock.

use std::sync::mpsc;
use std::time::Duration;

use schema::error::{LockClass, OpError};
use schema::models::Project;
use schema::ops::Lab;
use schema::settings::{JournalMode, RetryPolicy, TxnMode};

use crate::{policy, serial, TestDb};

fn hold_for(db: &TestDb, hold: Duration) -> std::thread::JoinHandle<()> {
    let (tx, rx) = mpsc::channel();
    let target = db.target.clone();
    let handle = std::thread::spawn(move || {
        let mut holder = schema::LabConn::open(
            &target,
            std::sync::Arc::new(policy(200, TxnMode::Deferred)),
            false,
        )
        .unwrap();
        holder.execute_raw("BEGIN IMMEDIATE").unwrap();
        holder
            .execute_raw("INSERT INTO project (name, created_at) VALUES ('holder', 0)")
            .unwrap();
        tx.send(()).unwrap();
        std::thread::sleep(hold);
        holder.execute_raw("COMMIT").unwrap();
    });
    rx.recv().unwrap();
    handle
}

#[test]
fn toaster_retry_rides_out_a_long_lock() {
    let _serial = serial();
    let db = TestDb::new(JournalMode::Delete);
    let mut conn = db.conn(policy(200, TxnMode::Deferred));
    let lab = Lab::new("test").with_retry(RetryPolicy::Toaster, Duration::from_secs(30));
    let holder = hold_for(&db, Duration::from_millis(1500));
    let result = lab.op("create_project", |op| {
        op.autocommit(&mut conn, |tx| {
            Ok(Project::get_or_create(tx.conn(), "patient")?)
        })
    });
    holder.join().unwrap();
    assert!(result.is_ok(), "{result:?}");
    let r = lab.stats.snapshot();
    assert!(r.retried >= 1, "retried {}", r.retried);
    assert_eq!(r.gave_up, 0);
    assert_eq!(r.failed_of(LockClass::BusyTimeout), r.retried);
    assert!(
        r.identity_violations().is_empty(),
        "{:?}",
        r.identity_violations()
    );
    assert!(r.lock_wait_share.unwrap() > 0.0);
}

#[test]
fn no_retry_gives_up_with_busy_timeout() {
    let _serial = serial();
    let db = TestDb::new(JournalMode::Delete);
    let mut conn = db.conn(policy(200, TxnMode::Deferred));
    let lab = Lab::new("test");
    let holder = hold_for(&db, Duration::from_millis(1500));
    let result = lab.op("create_project", |op| {
        op.autocommit(&mut conn, |tx| {
            Ok(Project::get_or_create(tx.conn(), "impatient")?)
        })
    });
    holder.join().unwrap();
    match result {
        Err(OpError::Db(e)) => assert_eq!(e.class, LockClass::BusyTimeout),
        other => panic!("expected busy_timeout, got {other:?}"),
    }
    let r = lab.stats.snapshot();
    assert_eq!((r.ops, r.ok, r.gave_up, r.retried), (1, 0, 1, 0));
    assert!(r.identity_violations().is_empty());
}

#[test]
fn backoff_gives_up_at_its_deadline() {
    let _serial = serial();
    let db = TestDb::new(JournalMode::Delete);
    let mut conn = db.conn(policy(100, TxnMode::Immediate));
    let lab = Lab::new("test").with_retry(RetryPolicy::Backoff, Duration::from_millis(400));
    let holder = hold_for(&db, Duration::from_millis(2000));
    let result = lab.op("create_project", |op| {
        op.write(&mut conn, |tx| {
            Ok(Project::get_or_create(tx.conn(), "bounded")?)
        })
    });
    holder.join().unwrap();
    assert!(
        matches!(result, Err(OpError::Db(ref e)) if e.class == LockClass::BusyTimeout),
        "{result:?}"
    );
    let r = lab.stats.snapshot();
    assert!(r.retried >= 1);
    assert_eq!(r.gave_up, 1);
    assert!(r.identity_violations().is_empty());
}
