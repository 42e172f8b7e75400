//! Integration tests of the schema crate, on real SQLite files in temp dirs.
#![allow(clippy::unwrap_used)]

mod bulk;
mod classify;
mod migrate;
mod retry;
mod servers;
mod toaster;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use schema::db::{DbTarget, LabConn, Policy};
use schema::settings::{parse_environments, JournalMode, TxnMode, DEFAULT_ENVIRONMENTS};

/// Contention tests run one at a time: two of them at once on two cores distort
/// each other.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A real, migrated SQLite file in a temp dir.
pub struct TestDb {
    pub dir: tempfile::TempDir,
    pub target: DbTarget,
}

impl TestDb {
    pub fn new(journal: JournalMode) -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let target = DbTarget::Sqlite(dir.path().join("lab.sqlite3"));
        schema::migrate::migrate(
            &target,
            journal,
            &parse_environments(DEFAULT_ENVIRONMENTS).unwrap(),
        )
        .unwrap();
        TestDb { dir, target }
    }

    pub fn conn(&self, policy: Policy) -> LabConn {
        LabConn::open(&self.target, Arc::new(policy), false).unwrap()
    }
}

pub fn policy(timeout_ms: u64, mode: TxnMode) -> Policy {
    Policy {
        busy_timeout: Duration::from_millis(timeout_ms),
        txn_mode: mode,
        ..Policy::default()
    }
}
