//! The connection policy, and the backend's connection re-exported under the
//! names the rest of the lab uses (`schema::db::LabConn`...). The connection
//! and the backends live in [`crate::backend`].

use std::time::Duration;

use crate::settings::{BusyWait, CheckpointMode, Isolation, Synchronous, TxnMode};

pub(crate) use crate::backend::sqlite::pragma_text;
pub use crate::backend::sqlite::{
    busy_delay, process_lock_wait, spawn_checkpointer, sqlite_busy_delay, start_checkpointer,
    BusyRecord, Checkpoints, StopFlag,
};
pub use crate::backend::*;

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub busy_timeout: Duration,
    /// How the busy handler sleeps between retries (SQLite only).
    pub busy_wait: BusyWait,
    pub synchronous: Synchronous,
    pub txn_mode: TxnMode,
    /// A server's isolation level (SQLite ignores it).
    pub isolation: Isolation,
    /// App work inside each write transaction (`LAB_TXN_WORK`), before COMMIT.
    pub txn_work: Duration,
    /// Who runs WAL checkpoints: under `background` every connection opens
    /// with `PRAGMA wal_autocheckpoint = 0`.
    pub checkpoint: CheckpointMode,
    /// Set at shutdown: busy handlers give up and retry loops end.
    pub stop: StopFlag,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            busy_timeout: Duration::from_secs(5),
            busy_wait: BusyWait::Sqlite,
            synchronous: Synchronous::Full,
            txn_mode: TxnMode::Deferred,
            isolation: Isolation::ReadCommitted,
            txn_work: Duration::ZERO,
            checkpoint: CheckpointMode::Auto,
            stop: StopFlag::default(),
        }
    }
}
