//! The server backends on real servers: classes from the real codes.
//!
//! Ignored by default; `scripts/test-servers` starts PostgreSQL and MariaDB and
//! runs them. The servers come from `LAB_POSTGRES_URL` and `LAB_MYSQL_URL`
//! (default: the lab user on 127.0.0.1); each test makes its own fresh database.

use std::sync::Arc;
use std::time::Duration;

use diesel::prelude::*;
use schema::backend::{AttemptFailure, Kind};
use schema::db::{DbTarget, LabConn, Policy};
use schema::settings::{parse_environments, Isolation, JournalMode, DEFAULT_ENVIRONMENTS};
use schema::{LockClass, TxError};

/// A fresh, migrated database on the server of `kind`, named after the test.
pub fn server_db(kind: Kind, test: &str) -> DbTarget {
    let (var, default) = match kind {
        Kind::Postgres => ("LAB_POSTGRES_URL", schema::settings::LOCAL_POSTGRES_URL),
        _ => ("LAB_MYSQL_URL", schema::settings::LOCAL_MYSQL_URL),
    };
    let url = std::env::var(var).unwrap_or_else(|_| default.to_string());
    let DbTarget::Server(server) = DbTarget::parse(&url).unwrap() else {
        panic!("{var}={url} is not a server URL")
    };
    let server = server.with_database(&format!("lab_test_{test}"));
    schema::migrate::create_server_database(&server, true).unwrap_or_else(|e| {
        panic!("{var}: {e} (is the server up? scripts/test-servers starts it)")
    });
    let target = DbTarget::Server(server);
    schema::migrate::migrate(
        &target,
        JournalMode::Delete,
        &parse_environments(DEFAULT_ENVIRONMENTS).unwrap(),
    )
    .unwrap();
    target
}

fn conn(target: &DbTarget, timeout: Duration, isolation: Isolation) -> LabConn {
    let policy = Policy {
        busy_timeout: timeout,
        isolation,
        ..Policy::default()
    };
    LabConn::open(target, Arc::new(policy), false).unwrap()
}

/// One UPDATE of an environment row, in whatever transaction is open.
fn touch(conn: &mut LabConn, id: i64) -> Result<(), schema::DbError> {
    let sql = format!("UPDATE build_environment SET updated_at = updated_at + 1 WHERE id = {id}");
    match conn.autocommit("touch", &mut |tx| {
        diesel::sql_query(&sql)
            .execute(tx.conn())
            .map_err(TxError::from)
    }) {
        Ok(_) => Ok(()),
        Err(e) => match e.error {
            AttemptFailure::Db(db) => Err(db),
            AttemptFailure::Aborted(why) => panic!("aborted: {why}"),
        },
    }
}

fn count_environments(conn: &mut LabConn) -> i64 {
    conn.read(&mut |c| {
        schema::schema::build_environment::table
            .count()
            .get_result::<i64>(c)
    })
    .unwrap()
}

/// Two transactions each hold one row and want the other's.
fn deadlock(kind: Kind, test: &str) -> schema::DbError {
    let target = server_db(kind, test);
    let mut a = conn(&target, Duration::from_secs(20), Isolation::ReadCommitted);
    let mut b = conn(&target, Duration::from_secs(20), Isolation::ReadCommitted);
    a.begin().unwrap();
    b.begin().unwrap();
    touch(&mut a, 1).unwrap();
    touch(&mut b, 2).unwrap();
    let waiter = std::thread::spawn(move || {
        let r = touch(&mut a, 2);
        (a, r)
    });
    std::thread::sleep(Duration::from_millis(500));
    let rb = touch(&mut b, 1);
    let (mut a, ra) = waiter.join().unwrap();
    a.rollback();
    b.rollback();
    // The server picks one victim; the other goes on.
    match (ra, rb) {
        (Err(e), Ok(())) | (Ok(()), Err(e)) => e,
        other => panic!("expected exactly one victim, got {other:?}"),
    }
}

/// A row held past the waiter's lock timeout.
fn lock_wait_timeout(kind: Kind, test: &str, timeout: Duration) -> schema::DbError {
    let target = server_db(kind, test);
    let mut holder = conn(&target, Duration::from_secs(20), Isolation::ReadCommitted);
    let mut waiter = conn(&target, timeout, Isolation::ReadCommitted);
    holder.begin().unwrap();
    touch(&mut holder, 1).unwrap();
    let e = touch(&mut waiter, 1).expect_err("the row is held past the timeout");
    holder.rollback();
    e
}

#[test]
#[ignore = "needs PostgreSQL/MariaDB; run by scripts/test-servers"]
fn postgres_repeatable_read_conflict_is_serialization_40001() {
    let target = server_db(Kind::Postgres, "pg_serialization");
    let mut a = conn(&target, Duration::from_secs(5), Isolation::RepeatableRead);
    let mut b = conn(&target, Duration::from_secs(5), Isolation::RepeatableRead);
    a.begin().unwrap();
    assert!(count_environments(&mut a) > 0); // takes a's snapshot
    touch(&mut b, 1).unwrap(); // commits after it
    let e = touch(&mut a, 1).expect_err("a's snapshot is older than b's commit");
    a.rollback();
    assert_eq!(e.class, LockClass::Serialization, "{e}");
    assert_eq!(
        e.server_code.map(|c| c.to_string()).as_deref(),
        Some("40001")
    );
    // The same under READ COMMITTED: no failure, the update sees b's row.
    let mut c = conn(&target, Duration::from_secs(5), Isolation::ReadCommitted);
    c.begin().unwrap();
    assert!(count_environments(&mut c) > 0);
    touch(&mut b, 1).unwrap();
    touch(&mut c, 1).unwrap();
    c.commit().unwrap();
}

#[test]
#[ignore = "needs PostgreSQL/MariaDB; run by scripts/test-servers"]
fn postgres_deadlock_is_40p01() {
    let e = deadlock(Kind::Postgres, "pg_deadlock");
    assert_eq!(e.class, LockClass::Deadlock, "{e}");
    assert_eq!(
        e.server_code.map(|c| c.to_string()).as_deref(),
        Some("40P01")
    );
}

#[test]
#[ignore = "needs PostgreSQL/MariaDB; run by scripts/test-servers"]
fn postgres_lock_timeout_is_55p03() {
    let e = lock_wait_timeout(
        Kind::Postgres,
        "pg_lock_timeout",
        Duration::from_millis(300),
    );
    assert_eq!(e.class, LockClass::LockWaitTimeout, "{e}");
    assert_eq!(
        e.server_code.map(|c| c.to_string()).as_deref(),
        Some("55P03")
    );
}

#[test]
#[ignore = "needs PostgreSQL/MariaDB; run by scripts/test-servers"]
fn mysql_deadlock_is_1213() {
    let e = deadlock(Kind::Mysql, "my_deadlock");
    assert_eq!(e.class, LockClass::Deadlock, "{e}");
    assert_eq!(
        e.server_code.map(|c| c.to_string()).as_deref(),
        Some("1213")
    );
}

#[test]
#[ignore = "needs PostgreSQL/MariaDB; run by scripts/test-servers"]
fn mysql_lock_wait_timeout_is_1205() {
    // innodb_lock_wait_timeout counts whole seconds: 1 s at least.
    let e = lock_wait_timeout(Kind::Mysql, "my_lock_wait", Duration::from_millis(300));
    assert_eq!(e.class, LockClass::LockWaitTimeout, "{e}");
    assert_eq!(
        e.server_code.map(|c| c.to_string()).as_deref(),
        Some("1205")
    );
}

#[test]
#[ignore = "needs PostgreSQL/MariaDB; run by scripts/test-servers"]
fn bad_server_urls_give_one_clear_line() {
    for (url, expect) in [
        (
            "postgres://locklab:wrong@127.0.0.1:5432/locklab",
            "password",
        ),
        ("postgres://locklab:locklab@127.0.0.1:1/locklab", "refused"),
        ("mysql://locklab:wrong@127.0.0.1:3306/locklab", "denied"),
        ("mysql://locklab:locklab@127.0.0.1:1/locklab", "connect"),
    ] {
        let target = DbTarget::parse(url).unwrap();
        let e = schema::migrate::startup_check(&target)
            .expect_err("must fail")
            .to_string();
        assert!(!e.contains('\n'), "one line: {e}");
        assert!(!e.contains("wrong"), "the password is masked: {e}");
        assert!(e.to_lowercase().contains(expect), "{url}: {e}");
    }
}

#[test]
#[ignore = "needs PostgreSQL/MariaDB; run by scripts/test-servers"]
fn bulk_create_returns_every_id_on_both_servers() {
    // PostgreSQL: one multi-row INSERT … RETURNING; MySQL: one INSERT each.
    for (kind, name) in [(Kind::Postgres, "bulk_pg"), (Kind::Mysql, "bulk_my")] {
        let target = server_db(kind, name);
        let mut c = conn(&target, Duration::from_secs(5), Isolation::ReadCommitted);
        crate::bulk::bulk_creates_every_row(c.diesel());
    }
}
