//! The r2d2 pool every daemon uses.

use std::sync::Arc;
use std::time::Duration;

use diesel::r2d2::{self, ManageConnection};

use super::conn::{LabConn, OpenError};
use super::target::DbTarget;
use crate::db::Policy;

// ---------------------------------------------------------------------------
// The pool
// ---------------------------------------------------------------------------

/// An r2d2 manager that opens [`LabConn`]s with one policy.
#[derive(Debug, Clone)]
pub struct LabManager {
    target: DbTarget,
    policy: Arc<Policy>,
}

impl LabManager {
    pub fn new(target: DbTarget, policy: Policy) -> LabManager {
        LabManager {
            target,
            policy: Arc::new(policy),
        }
    }
}

impl ManageConnection for LabManager {
    type Connection = LabConn;
    type Error = OpenError;

    fn connect(&self) -> Result<LabConn, OpenError> {
        LabConn::open(&self.target, self.policy.clone(), false)
    }

    fn is_valid(&self, conn: &mut LabConn) -> Result<(), OpenError> {
        if conn.in_transaction() {
            // A connection must come back from its user with no open transaction.
            conn.rollback_all();
        }
        Ok(())
    }

    fn has_broken(&self, conn: &mut LabConn) -> bool {
        conn.in_transaction()
    }
}

pub type Pool = r2d2::Pool<LabManager>;
pub type PooledConn = r2d2::PooledConnection<LabManager>;

/// Builds the pool every daemon uses. Connections are opened with `mode=rw`.
pub fn build_pool(target: &DbTarget, policy: Policy, max_size: u32) -> Result<Pool, String> {
    r2d2::Pool::builder()
        .max_size(max_size)
        .min_idle(Some(1))
        .connection_timeout(Duration::from_secs(30))
        .test_on_check_out(true)
        .build(LabManager::new(target.clone(), policy))
        .map_err(|e| format!("opening a pool on {}: {e}", target.display()))
}
