//! The connection policy, and the SQLite backend's connection re-exported
//! under the names the rest of the lab uses (`schema::db::LabConn`...). The
//! backend itself lives in [`crate::backend::sqlite`].

use std::time::Duration;

use crate::settings::{Synchronous, TxnMode};

pub use crate::backend::sqlite::*;

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub busy_timeout: Duration,
    pub synchronous: Synchronous,
    pub txn_mode: TxnMode,
    /// App work inside each write transaction (`LAB_TXN_WORK`), before COMMIT.
    pub txn_work: Duration,
    /// Set at shutdown: busy handlers give up and retry loops end.
    pub stop: StopFlag,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            busy_timeout: Duration::from_secs(5),
            synchronous: Synchronous::Full,
            txn_mode: TxnMode::Deferred,
            txn_work: Duration::ZERO,
            stop: StopFlag::default(),
        }
    }
}
