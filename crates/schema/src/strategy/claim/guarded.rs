//! `guarded`: the queue read outside any transaction, then conditional
//! updates: the request moves from queued to inprogress only if it is still
//! queued, and each environment is locked only if it is still free. The rows
//! affected say who won; any lost race rolls the whole claim back. Every
//! statement of the write transaction is a write, so it never upgrades from
//! reader to writer.

use super::{common, gave_up_or_lost, single, Claim, ClaimCtx, Claimed, Plan, Step};
use crate::db::{LabConn, Tx};
use crate::error::{OpError, TxError};
use crate::models::{Booking, Build, BuildRequest, Environment};
use crate::types::{EnvironmentId, RequestId, RequestState};

pub struct Guarded;

/// The guarded write.
pub fn write_guarded(
    ctx: &ClaimCtx,
    tx: &mut Tx<'_>,
    request: RequestId,
    environments: &[EnvironmentId],
) -> Result<Claimed, TxError> {
    let moved = tx.counted(|c| {
        BuildRequest::transition(
            c,
            request,
            RequestState::Queued,
            RequestState::InProgress,
            None,
        )
    })?;
    if moved != 1 {
        return Err(TxError::abort("request no longer queued"));
    }
    let lease_until = ctx.lease_until();
    for env in environments {
        if tx.counted(|c| Environment::lock_if_free(c, *env, request, lease_until))? != 1 {
            return Err(TxError::abort("environment no longer free"));
        }
    }
    tx.counted(|c| Booking::book_all(c, environments, request, ctx.name()))?;
    let seed = ctx.seed();
    let build = tx.inserted(|c| Build::create(c, request, ctx.name(), seed, lease_until))?;
    Ok(Claimed {
        request,
        build,
        environments: environments.to_vec(),
    })
}

impl Guarded {
    fn write_in(
        ctx: &ClaimCtx,
        conn: &mut LabConn,
        plan: Plan,
        op_name: &'static str,
    ) -> Result<Step, OpError> {
        ctx.lab.op(op_name, |op| match plan {
            Plan::Idle { .. } => Ok(Step::Idle),
            Plan::Wait { .. } => Ok(Step::Waiting),
            Plan::Selected { .. } => Err(OpError::Aborted("not a plan of this strategy".into())),
            Plan::Unsatisfiable { request, reason } => op.write(conn, |tx| {
                single::fail_unsatisfiable(ctx, tx, request, &reason)?;
                Ok(Step::FailedUnsatisfiable(request))
            }),
            Plan::Claim {
                request,
                environments,
                ..
            } => op.write(conn, |tx| {
                write_guarded(ctx, tx, request, &environments).map(Step::Claimed)
            }),
        })
    }
}

impl Claim for Guarded {
    fn name(&self) -> &'static str {
        "guarded"
    }

    fn cleanup(&self, ctx: &ClaimCtx, conn: &mut LabConn) -> Vec<Step> {
        common::release_finished(ctx, conn).into_iter().collect()
    }

    fn read(&self, ctx: &ClaimCtx, conn: &mut LabConn) -> Result<Plan, OpError> {
        ctx.lab
            .op("claim_read", |op| op.read(conn, common::read_phase))
    }

    fn write(&self, ctx: &ClaimCtx, conn: &mut LabConn, plan: Plan) -> Result<Step, OpError> {
        Guarded::write_in(ctx, conn, plan, "claim_write")
    }

    fn claim(&self, ctx: &ClaimCtx, conn: &mut LabConn) -> Step {
        let plan = match ctx
            .lab
            .op("claim_read", |op| op.read(conn, common::read_phase))
        {
            Ok(p) => p,
            Err(e) => return gave_up_or_lost(e),
        };
        match plan {
            Plan::Idle { .. } => Step::Idle,
            Plan::Wait { .. } => Step::Waiting,
            plan => Guarded::write_in(ctx, conn, plan, "claim").unwrap_or_else(gave_up_or_lost),
        }
    }
}
