//! `incremental`: the second source document's booking loop. It takes the
//! oldest queued request and, inside one transaction, books free environments
//! one at a time until the request is satisfied, then marks the request in
//! progress and creates its build. When it runs out of environments it rolls
//! back and tries again on a later pass.
//!
//! The rollback is the point: on SQLite, PostgreSQL and InnoDB it undoes the
//! partial bookings; on MyISAM tables BEGIN and ROLLBACK are accepted and
//! ignored, each statement commits on its own, so the environments booked
//! before it ran out stay locked for a request that is still queued (`check`
//! counts them as leaked bookings). MySQL says so only in warning 1196, which
//! the lab reads after each ROLLBACK.

use super::{common, settle, single, Claim, ClaimCtx, Claimed, Plan, Step, NOTHING_QUEUED};
use crate::backend::Conn;
use crate::db::{LabConn, Tx};
use crate::error::{OpError, TxError};
use crate::models::{Booking, Build, BuildRequest, Environment};
use crate::types::{EnvironmentId, RequestState};

pub struct Incremental;

/// The read: the oldest queued request (queue order). A request no registered
/// environments could ever satisfy is failed; every other one is tried, fit
/// or not: the loop finds out by booking.
pub fn read_head(conn: &mut Conn) -> diesel::QueryResult<Plan> {
    let queued = BuildRequest::queued_in_order(conn, 1)?;
    let Some(head) = queued.into_iter().next() else {
        return Ok(Plan::Idle { queued: 0 });
    };
    if head.needs.0.is_empty() {
        return Ok(Plan::Unsatisfiable {
            request: head.id,
            reason: "needs no environment".to_string(),
        });
    }
    let capacity = Environment::capacity(conn)?;
    if let Some(reason) = head.needs.unsatisfiable_by(&capacity) {
        return Ok(Plan::Unsatisfiable {
            request: head.id,
            reason,
        });
    }
    Ok(Plan::Claim {
        request: head.id,
        needs: head.needs,
        environments: Vec::new(),
    })
}

/// The loop, inside the open transaction: one environment at a time.
pub fn write_incremental(ctx: &ClaimCtx, tx: &mut Tx<'_>, plan: Plan) -> Result<Step, TxError> {
    let (request, needs) = match plan {
        Plan::Claim { request, needs, .. } => (request, needs),
        Plan::Unsatisfiable { request, reason } => {
            single::fail_unsatisfiable(ctx, tx, request, &reason)?;
            return Ok(Step::FailedUnsatisfiable(request));
        }
        Plan::Idle { .. } => return Err(TxError::abort(NOTHING_QUEUED)),
        Plan::Wait { .. } | Plan::Selected { .. } => {
            return Err(TxError::abort("not a plan of this strategy"))
        }
    };
    let lease_until = ctx.lease_until();
    let mut booked: Vec<EnvironmentId> = Vec::new();
    for (kind, want) in &needs.0 {
        for _ in 0..*want {
            let free = Environment::free_of_kinds(tx.conn(), &[kind.as_str()])?;
            let Some(env) = free.into_iter().find(|e| !booked.contains(&e.id)) else {
                return Err(TxError::abort(format!(
                    "ran out of {kind} after booking {} of {} environments",
                    booked.len(),
                    needs.total()
                )));
            };
            if tx.counted(|c| Environment::lock_if_free(c, env.id, request, lease_until))? != 1 {
                return Err(TxError::abort("environment taken since the read"));
            }
            tx.counted(|c| Booking::book_all(c, &[env.id], request, ctx.name()))?;
            booked.push(env.id);
        }
    }
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
    let seed = ctx.seed();
    let build = tx.inserted(|c| Build::create(c, request, ctx.name(), seed, lease_until))?;
    Ok(Step::Claimed(Claimed {
        request,
        build,
        environments: booked,
    }))
}

impl Claim for Incremental {
    fn name(&self) -> &'static str {
        "incremental"
    }

    fn cleanup(&self, ctx: &ClaimCtx, conn: &mut LabConn) -> Vec<Step> {
        common::release_finished(ctx, conn).into_iter().collect()
    }

    fn read(&self, ctx: &ClaimCtx, conn: &mut LabConn) -> Result<Plan, OpError> {
        ctx.lab.op("claim_read", |op| op.read(conn, read_head))
    }

    fn write(&self, ctx: &ClaimCtx, conn: &mut LabConn, plan: Plan) -> Result<Step, OpError> {
        settle(ctx.lab.op("claim", |op| {
            op.write(conn, |tx| write_incremental(ctx, tx, plan.clone()))
        }))
    }

    fn claim(&self, ctx: &ClaimCtx, conn: &mut LabConn) -> Step {
        let result = ctx.lab.op("claim", |op| {
            op.write(conn, |tx| {
                let plan = read_head(tx.conn())?;
                write_incremental(ctx, tx, plan)
            })
        });
        settle(result).unwrap_or_else(super::gave_up_or_lost)
    }
}
