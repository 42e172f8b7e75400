//! `single`: the queue read and the claim in one transaction. With
//! `LAB_TXN_MODE=immediate` the transaction takes the write lock at BEGIN, so
//! two schedulers are serialised and never claim one request twice. With
//! deferred it is a read-then-write, and fails with busy_upgrade or
//! busy_snapshot under contention.

use super::{common, settle, Claim, ClaimCtx, Claimed, Plan, Step, NOTHING_FITS, NOTHING_QUEUED};
use crate::db::{LabConn, Tx};
use crate::error::{OpError, TxError};
use crate::models::{Booking, Build, BuildRequest, Environment};
use crate::types::RequestState;

pub struct Single;

/// The write inside the open transaction: everything the plan says, or a
/// rollback. Shared by [`Single`] and the split phases of a test.
pub fn write_plan(ctx: &ClaimCtx, tx: &mut Tx<'_>, plan: Plan) -> Result<Step, TxError> {
    match plan {
        Plan::Idle { .. } => Err(TxError::abort(NOTHING_QUEUED)),
        Plan::Wait { .. } => Err(TxError::abort(NOTHING_FITS)),
        Plan::Selected { .. } => Err(TxError::abort("not a plan of this strategy")),
        Plan::Unsatisfiable { request, reason } => {
            fail_unsatisfiable(ctx, tx, request, &reason)?;
            Ok(Step::FailedUnsatisfiable(request))
        }
        Plan::Claim {
            request,
            needs,
            environments: _,
        } => {
            // Read the free environments again inside this transaction, then
            // lock them: read then write.
            let kinds: Vec<&str> = needs.0.keys().map(String::as_str).collect();
            let free = Environment::free_of_kinds(tx.conn(), &kinds)?;
            let environments = common::fit(&needs, &free)
                .ok_or_else(|| TxError::abort("environments taken since the read"))?;
            let lease_until = ctx.lease_until();
            tx.counted(|c| Environment::lock_for(c, &environments, request, lease_until))?;
            tx.counted(|c| Booking::book_all(c, &environments, request, ctx.name()))?;
            tx.counted(|c| BuildRequest::set_state(c, request, RequestState::InProgress))?;
            let seed = ctx.seed();
            let build =
                tx.inserted(|c| Build::create(c, request, ctx.name(), seed, lease_until))?;
            Ok(Step::Claimed(Claimed {
                request,
                build,
                environments,
            }))
        }
    }
}

/// Fails a request no registered environments could ever satisfy.
pub(super) fn fail_unsatisfiable(
    ctx: &ClaimCtx,
    tx: &mut Tx<'_>,
    request: crate::types::RequestId,
    reason: &str,
) -> Result<(), TxError> {
    let n = tx.counted(|c| {
        BuildRequest::transition(
            c,
            request,
            RequestState::Queued,
            RequestState::Failed,
            Some(&format!("unsatisfiable: {reason}")),
        )
    })?;
    if n == 1 {
        log::warn!(
            "{}: request {request} can never run ({reason}); failed it",
            ctx.name()
        );
    }
    Ok(())
}

impl Claim for Single {
    fn name(&self) -> &'static str {
        "single"
    }

    fn cleanup(&self, ctx: &ClaimCtx, conn: &mut LabConn) -> Vec<Step> {
        common::release_finished(ctx, conn).into_iter().collect()
    }

    /// The read alone: in a split claim (a test), it opens the transaction
    /// that [`Single::write`] continues.
    fn read(&self, _ctx: &ClaimCtx, conn: &mut LabConn) -> Result<Plan, OpError> {
        conn.begin()?;
        common::read_phase(conn.diesel()).map_err(|e| {
            let err = conn.classify(crate::error::Phase::Body, &e);
            conn.rollback();
            OpError::Db(err)
        })
    }

    /// Continues the transaction [`Single::read`] left open, then commits.
    fn write(&self, ctx: &ClaimCtx, conn: &mut LabConn, plan: Plan) -> Result<Step, OpError> {
        let result = ctx.lab.op("claim", |op| {
            let step = op.autocommit(conn, |tx| write_plan(ctx, tx, plan.clone()))?;
            op.commit_open(conn)?;
            Ok(step)
        });
        if conn.in_transaction() {
            conn.rollback();
        }
        settle(result)
    }

    fn claim(&self, ctx: &ClaimCtx, conn: &mut LabConn) -> Step {
        let result = ctx.lab.op("claim", |op| {
            op.write(conn, |tx| {
                let plan = common::read_phase(tx.conn())?;
                write_plan(ctx, tx, plan)
            })
        });
        settle(result).unwrap_or_else(super::gave_up_or_lost)
    }
}
