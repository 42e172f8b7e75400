//! `toaster`: Toaster's `runbuilds` `schedule()` and `cleanup()`, step by step,
//! as toaster-facts.md lists them (bitbake's
//! `lib/toaster/bldcontrol/management/commands/runbuilds.py`). Each step is an
//! operation of its own, under these names, which other tools read:
//!
//! 1. `select_request`: an `atomic()` block that only reads the first queued
//!    request by primary key. No priority, no skipping ahead.
//! 2. `mark_inprogress`: outside any block, `state = INPROGRESS; save()`: a
//!    patched save, its own transaction, with the retry policy.
//! 3. `select_environment`: an `atomic()` block that reads the first free
//!    environment of any kind and saves it locked: the only read-then-write
//!    transaction of runbuilds. The save inside is a patched save, so a lock
//!    failure retries inside the open block, still holding what it read.
//! 4. `postpone`: when no environment is free the block rolls back, and only
//!    then `state = QUEUED; save()` runs, its own transaction. The request
//!    flips queued → inprogress → queued.
//! 5. `assign_environment`: `environment = be; save()` on the request, then
//!    the build is triggered: the Build row webui made is filled in (or, when
//!    it is already filled by another claim, a new one is made, so the double
//!    claim shows) and the environment becomes RUNNING.
//!
//! Any step after the first that gives up takes Toaster's `except` path,
//! `fail_request`: the request is saved FAILED (and an environment it locked
//! is saved FREE).
//!
//! `cleanup`: environments LOCKED for more than 30 s whose request failed,
//! completed or is cancelling are freed with one queryset `.update()`
//! (autocommit, never retried), on every pass: an UPDATE takes the write lock
//! even when it matches no row. When it freed some, the lab closes their
//! bookings with a second statement: the bookings are the lab's own evidence,
//! not Toaster's.
//!
//! The booking row is written inside the `select_environment` save, after the
//! environment's lock, so its time is taken with the write lock held.

use std::time::Duration;

use super::{gave_up_or_lost, Claim, ClaimCtx, Claimed, Plan, Step};
use crate::db::LabConn;
use crate::error::OpError;
use crate::models::{Booking, Build, BuildRequest, Environment};
use crate::types::{now_micros, BuildId, EnvironmentId, RequestId, RequestState};

pub struct Toaster;

/// How long an environment stays LOCKED before Toaster's cleanup frees it.
pub const CLEANUP_AFTER: Duration = Duration::from_secs(30);

/// Step 1: the read-only block. With nothing queued, `[0]` raises IndexError
/// inside it and the block rolls back (the operation is rolled back).
pub fn select_request(ctx: &ClaimCtx, conn: &mut LabConn) -> Result<Plan, OpError> {
    let result = ctx.lab.op("select_request", |op| {
        op.block(conn, |op, conn| {
            match op.read(conn, BuildRequest::first_queued)? {
                Some(r) => Ok(Plan::Selected {
                    request: r.id,
                    build: r.build_id,
                }),
                None => Err(OpError::Aborted(super::NOTHING_QUEUED.to_string())),
            }
        })
    });
    match result {
        Err(OpError::Aborted(r)) if r == super::NOTHING_QUEUED => Ok(Plan::Idle { queued: 0 }),
        other => other,
    }
}

/// Step 2: the patched save that marks the request inprogress, whatever its
/// state now is.
pub fn mark_inprogress(
    ctx: &ClaimCtx,
    conn: &mut LabConn,
    request: RequestId,
) -> Result<(), OpError> {
    ctx.lab.op("mark_inprogress", |op| {
        op.save(conn, |tx| {
            tx.counted(|c| BuildRequest::set_state(c, request, RequestState::InProgress))?;
            Ok(())
        })
    })
}

/// Step 3: read the first free environment, then lock it, in one block. None
/// when no environment is free (the block rolled back).
pub fn select_environment(
    ctx: &ClaimCtx,
    conn: &mut LabConn,
    request: RequestId,
) -> Result<Option<EnvironmentId>, OpError> {
    let result = ctx.lab.op("select_environment", |op| {
        op.block(conn, |op, conn| {
            let Some(env) = op.read(conn, Environment::first_free)? else {
                // IndexError: the block rolls back.
                return Err(OpError::Aborted("no build environment free".to_string()));
            };
            let lease_until = ctx.lease_until();
            op.save(conn, |tx| {
                tx.counted(|c| Environment::lock_for(c, &[env.id], request, lease_until))?;
                tx.counted(|c| Booking::book_all(c, &[env.id], request, ctx.name()))?;
                Ok(())
            })?;
            Ok(env.id)
        })
    });
    match result {
        Ok(env) => Ok(Some(env)),
        Err(OpError::Aborted(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Step 4: the separate save that puts the request back in the queue.
pub fn postpone(ctx: &ClaimCtx, conn: &mut LabConn, request: RequestId) -> Result<(), OpError> {
    ctx.lab.op("postpone", |op| {
        op.save(conn, |tx| {
            tx.counted(|c| BuildRequest::set_state(c, request, RequestState::Queued))?;
            Ok(())
        })
    })
}

/// Step 5: point the request at its environment, fill in (or make) its build,
/// and mark the environment running. Three patched saves.
pub fn assign_environment(
    ctx: &ClaimCtx,
    conn: &mut LabConn,
    request: RequestId,
    build: Option<BuildId>,
    env: EnvironmentId,
) -> Result<BuildId, OpError> {
    ctx.lab.op("assign_environment", |op| {
        op.save(conn, |tx| {
            tx.counted(|c| BuildRequest::set_environment(c, request, env))?;
            Ok(())
        })?;
        let seed = ctx.seed();
        let lease_until = ctx.lease_until();
        let build = op.save(conn, |tx| {
            if let Some(b) = build {
                if tx.counted(|c| Build::fill(c, b, request, ctx.name(), seed, lease_until))? == 1 {
                    return Ok(b);
                }
            }
            Ok(tx.inserted(|c| Build::create(c, request, ctx.name(), seed, lease_until))?)
        })?;
        op.save(conn, |tx| {
            tx.counted(|c| Environment::set_running(c, env, lease_until))?;
            Ok(())
        })?;
        Ok(build)
    })
}

/// Toaster's `except` path: the request is saved FAILED, and an environment it
/// locked is saved FREE.
pub fn fail_request(
    ctx: &ClaimCtx,
    conn: &mut LabConn,
    request: RequestId,
    env: Option<EnvironmentId>,
    why: &str,
) {
    let reason = format!("runbuilds: error launching build: {why}");
    let _ = ctx.lab.op("fail_request", |op| {
        op.save(conn, |tx| {
            tx.counted(|c| {
                BuildRequest::transition(
                    c,
                    request,
                    RequestState::InProgress,
                    RequestState::Failed,
                    Some(&reason),
                )
            })?;
            Ok(())
        })?;
        if let Some(env) = env {
            op.save(conn, |tx| {
                tx.counted(|c| Environment::free_one(c, env))?;
                tx.counted(|c| Booking::release_for_environments(c, &[env]))?;
                Ok(())
            })?;
        }
        Ok(())
    });
}

fn why(e: &OpError) -> String {
    match e {
        OpError::Db(d) => format!("database is locked ({})", d.class),
        OpError::Aborted(r) => r.clone(),
    }
}

impl Claim for Toaster {
    fn name(&self) -> &'static str {
        "toaster"
    }

    fn cleanup(&self, ctx: &ClaimCtx, conn: &mut LabConn) -> Vec<Step> {
        let cutoff = now_micros() - i64::try_from(CLEANUP_AFTER.as_micros()).unwrap_or(0);
        let result = ctx.lab.op("cleanup", |op| {
            let freed = op.statement(conn, |tx| {
                Ok(tx.counted(|c| Environment::free_stale_locked(c, cutoff))?)
            })?;
            if freed > 0 {
                op.statement(conn, |tx| {
                    Ok(tx.counted(Booking::release_for_free_environments)?)
                })?;
            }
            Ok(freed)
        });
        vec![match result {
            Ok(0) => Step::Idle,
            Ok(n) => Step::Freed(n),
            Err(e) => gave_up_or_lost(e),
        }]
    }

    fn read(&self, ctx: &ClaimCtx, conn: &mut LabConn) -> Result<Plan, OpError> {
        select_request(ctx, conn)
    }

    fn write(&self, ctx: &ClaimCtx, conn: &mut LabConn, plan: Plan) -> Result<Step, OpError> {
        let (request, build) = match plan {
            Plan::Selected { request, build } => (request, build),
            Plan::Idle { .. } => return Ok(Step::Idle),
            _ => return Err(OpError::Aborted("not a plan of this strategy".to_string())),
        };
        if let Err(e) = mark_inprogress(ctx, conn, request) {
            fail_request(ctx, conn, request, None, &why(&e));
            return Err(e);
        }
        let env = match select_environment(ctx, conn, request) {
            Ok(Some(env)) => env,
            Ok(None) => {
                return match postpone(ctx, conn, request) {
                    Ok(()) => Ok(Step::Postponed(request)),
                    Err(e) => {
                        fail_request(ctx, conn, request, None, &why(&e));
                        Err(e)
                    }
                };
            }
            Err(e) => {
                fail_request(ctx, conn, request, None, &why(&e));
                return Err(e);
            }
        };
        match assign_environment(ctx, conn, request, build, env) {
            Ok(build) => Ok(Step::Claimed(Claimed {
                request,
                build,
                environments: vec![env],
            })),
            Err(e) => {
                fail_request(ctx, conn, request, Some(env), &why(&e));
                Err(e)
            }
        }
    }
}
