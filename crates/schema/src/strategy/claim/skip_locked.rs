//! `skip-locked`: a server's good twin. One transaction reads the queue with
//! `SELECT … FOR UPDATE SKIP LOCKED` (rows another scheduler is claiming are
//! skipped, not waited for), then the free environments of the kinds it
//! needs the same way, and books them. Each row it read is locked until it
//! commits, so no other claim can take it in between, and no claim waits for
//! another: two schedulers never collide on one request or one environment.
//!
//! SQLite has no row locks: there the reads are plain, inside a write
//! transaction (one writer at a time), which `LAB_TXN_MODE=immediate` makes a
//! whole-database lock taken at BEGIN.

use super::{
    common, settle, single, Claim, ClaimCtx, Claimed, Plan, Step, NOTHING_FITS, NOTHING_QUEUED,
};
use crate::db::{LabConn, Tx};
use crate::error::{OpError, TxError};
use crate::models::{Booking, Build, BuildRequest, Environment};
use crate::types::RequestState;

pub struct SkipLocked;

/// The claim, inside the open transaction.
pub fn claim_in(ctx: &ClaimCtx, tx: &mut Tx<'_>) -> Result<Step, TxError> {
    let queued = BuildRequest::queued_skip_locked(tx.conn(), common::QUEUE_SCAN)?;
    if queued.is_empty() {
        return Err(TxError::abort(NOTHING_QUEUED));
    }
    let capacity = Environment::capacity(tx.conn())?;
    for q in &queued {
        let reason = if q.needs.0.is_empty() {
            Some("needs no environment".to_string())
        } else {
            q.needs.unsatisfiable_by(&capacity)
        };
        if let Some(reason) = reason {
            single::fail_unsatisfiable(ctx, tx, q.id, &reason)?;
            return Ok(Step::FailedUnsatisfiable(q.id));
        }
        let kinds: Vec<&str> = q.needs.0.keys().map(String::as_str).collect();
        let free = Environment::free_of_kinds_skip_locked(tx.conn(), &kinds)?;
        let Some(environments) = common::fit(&q.needs, &free) else {
            continue;
        };
        let lease_until = ctx.lease_until();
        let request = q.id;
        tx.counted(|c| Environment::lock_for(c, &environments, request, lease_until))?;
        tx.counted(|c| Booking::book_all(c, &environments, request, ctx.name()))?;
        tx.counted(|c| BuildRequest::set_state(c, request, RequestState::InProgress))?;
        let seed = ctx.seed();
        let build = tx.inserted(|c| Build::create(c, request, ctx.name(), seed, lease_until))?;
        return Ok(Step::Claimed(Claimed {
            request,
            build,
            environments,
        }));
    }
    Err(TxError::abort(NOTHING_FITS))
}

impl Claim for SkipLocked {
    fn name(&self) -> &'static str {
        "skip-locked"
    }

    fn cleanup(&self, ctx: &ClaimCtx, conn: &mut LabConn) -> Vec<Step> {
        common::release_finished(ctx, conn).into_iter().collect()
    }

    /// The read happens under the row locks of the write: a split claim
    /// (a test) reads the plan without locks, as `guarded` does.
    fn read(&self, ctx: &ClaimCtx, conn: &mut LabConn) -> Result<Plan, OpError> {
        ctx.lab
            .op("claim_read", |op| op.read(conn, common::read_phase))
    }

    fn write(&self, ctx: &ClaimCtx, conn: &mut LabConn, _plan: Plan) -> Result<Step, OpError> {
        settle(
            ctx.lab
                .op("claim", |op| op.write(conn, |tx| claim_in(ctx, tx))),
        )
    }

    fn claim(&self, ctx: &ClaimCtx, conn: &mut LabConn) -> Step {
        settle(
            ctx.lab
                .op("claim", |op| op.write(conn, |tx| claim_in(ctx, tx))),
        )
        .unwrap_or_else(super::gave_up_or_lost)
    }
}
