//! How runbuilds claims a request (`LAB_CLAIM`). One file per strategy; each
//! owns its transaction boundaries. How each transaction begins is the
//! policy's (`LAB_TXN_MODE`).
//!
//! - [`toaster`]: Toaster's `schedule()` step by step (toaster-facts.md): a
//!   read-only transaction selects the first queued request by id, its own
//!   save marks it inprogress, one transaction reads the first free
//!   environment and locks it, a separate save postpones the request when none
//!   is free, and a save points the request at its environment. One
//!   environment of any kind per request.
//! - [`single`]: read and write in one transaction.
//! - [`guarded`]: conditional updates whose rows-affected say who won; no
//!   read-then-write.
//! - [`skip_locked`]: a server's good twin: `FOR UPDATE SKIP LOCKED` reads
//!   in the claim's one transaction.
//! - [`incremental`]: the second source document's loop: one environment at
//!   a time inside one transaction, rolled back when they run out.
//!
//! `single` and `guarded` book every environment a request needs or none, in
//! queue order (priority DESC, created_at, id); a request that cannot be
//! booked now waits while smaller ones go ahead.
//!
//! The read phase and the write phase are separate calls ([`Claim::read`],
//! [`Claim::write`]) so that a test can interleave two schedulers: A.read,
//! B.read, A.write, B.write.

mod common;
pub mod guarded;
pub mod incremental;
pub mod single;
pub mod skip_locked;
pub mod toaster;

use std::time::Duration;

use serde::Serialize;

use crate::db::LabConn;
use crate::error::OpError;
use crate::models::Needs;
use crate::ops::Lab;
use crate::settings::ClaimStrategy;
use crate::types::{now_micros, BuildId, EnvironmentId, RequestId};

pub use common::{fit, poll_seen, read_phase, releasable, release, QUEUE_SCAN};

/// What the read phase decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Nothing queued.
    Idle { queued: usize },
    /// Requests are queued but none fits the free environments now.
    Wait { queued: usize },
    /// A request no registered environments could ever satisfy.
    Unsatisfiable { request: RequestId, reason: String },
    /// Claim this request with these environments.
    Claim {
        request: RequestId,
        needs: Needs,
        environments: Vec<EnvironmentId>,
    },
    /// Toaster's `_selectBuildRequest` picked this request (and the Build row
    /// webui made for it, if any).
    Selected {
        request: RequestId,
        build: Option<BuildId>,
    },
}

/// A successful claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Claimed {
    pub request: RequestId,
    pub build: BuildId,
    pub environments: Vec<EnvironmentId>,
}

/// What one step of the scheduler did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Claimed(Claimed),
    /// A request no environments could ever satisfy, now failed.
    FailedUnsatisfiable(RequestId),
    /// Environments freed and bookings closed for these requests.
    Released(Vec<RequestId>),
    /// Builds whose ingester stopped renewing, failed with their requests.
    Expired(Vec<RequestId>),
    /// How many environments Toaster's cleanup freed.
    Freed(usize),
    /// The claim lost a race or its environments went: nothing written.
    Lost(String),
    /// Toaster: no environment was free; the request was saved back as queued.
    Postponed(RequestId),
    /// Requests wait for environments; nothing was written.
    Waiting,
    /// A database operation gave up (already counted and logged).
    GaveUp,
    Idle,
}

impl Step {
    /// Whether the step moved something, so the scheduler should go on at once.
    pub fn did_work(&self) -> bool {
        match self {
            Step::Claimed(_) | Step::FailedUnsatisfiable(_) => true,
            Step::Released(r) | Step::Expired(r) => !r.is_empty(),
            Step::Freed(n) => *n > 0,
            _ => false,
        }
    }
}

/// What a claim needs from its scheduler.
#[derive(Debug, Clone)]
pub struct ClaimCtx {
    pub lab: Lab,
    /// The lease a new build gets, for an ingester to take it.
    pub lease: Duration,
}

impl ClaimCtx {
    pub fn name(&self) -> &str {
        &self.lab.process
    }

    pub fn lease_until(&self) -> i64 {
        now_micros() + i64::try_from(self.lease.as_micros()).unwrap_or(i64::MAX / 2)
    }

    /// A seed for a new build's event stream.
    pub fn seed(&self) -> i64 {
        use rand::Rng;
        rand::rng().random_range(0..i64::MAX)
    }
}

/// A claim strategy.
pub trait Claim: Send + Sync {
    /// The strategy's name, as `LAB_CLAIM` spells it.
    fn name(&self) -> &'static str;

    /// Housekeeping at the start of each pass: free what finished or died.
    fn cleanup(&self, ctx: &ClaimCtx, conn: &mut LabConn) -> Vec<Step>;

    /// The read phase, in the strategy's own transaction shape.
    fn read(&self, ctx: &ClaimCtx, conn: &mut LabConn) -> Result<Plan, OpError>;

    /// The write phase for a plan the read phase made.
    fn write(&self, ctx: &ClaimCtx, conn: &mut LabConn, plan: Plan) -> Result<Step, OpError>;

    /// One claim: read, then write.
    fn claim(&self, ctx: &ClaimCtx, conn: &mut LabConn) -> Step {
        match self.read(ctx, conn) {
            Ok(plan) => self.write(ctx, conn, plan).unwrap_or_else(gave_up_or_lost),
            Err(e) => gave_up_or_lost(e),
        }
    }

    /// The dead-build check of Toaster's 5 s timeout, the only thing an
    /// un-notified scheduler does: reads, and writes only when a build's
    /// ingester stopped renewing its lease.
    fn check_dead(&self, ctx: &ClaimCtx, conn: &mut LabConn) -> Option<Step> {
        common::expire(ctx, conn)
    }
}

/// The strategy of a `LAB_CLAIM` value.
pub fn strategy(kind: ClaimStrategy) -> &'static dyn Claim {
    match kind {
        ClaimStrategy::Toaster => &toaster::Toaster,
        ClaimStrategy::Single => &single::Single,
        ClaimStrategy::Guarded => &guarded::Guarded,
        ClaimStrategy::Incremental => &incremental::Incremental,
        ClaimStrategy::SkipLocked => &skip_locked::SkipLocked,
    }
}

/// A rollback on purpose that means "nothing to do", as a step.
pub(crate) fn settle(result: Result<Step, OpError>) -> Result<Step, OpError> {
    match result {
        Err(OpError::Aborted(reason)) if reason == NOTHING_QUEUED => Ok(Step::Idle),
        Err(OpError::Aborted(reason)) if reason == NOTHING_FITS => Ok(Step::Waiting),
        other => other,
    }
}

pub(crate) const NOTHING_QUEUED: &str = "nothing queued";
pub(crate) const NOTHING_FITS: &str = "no request fits the free environments";

/// Maps an operation's failure to the step it makes.
pub(crate) fn gave_up_or_lost(e: OpError) -> Step {
    match e {
        OpError::Db(_) => Step::GaveUp,
        OpError::Aborted(reason) => Step::Lost(reason),
    }
}
