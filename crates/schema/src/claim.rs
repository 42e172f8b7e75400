//! How runbuilds claims a request: a read phase and a write phase, as separate
//! functions so that a test can interleave two schedulers (A.read, B.read,
//! A.write, B.write). Where the transaction boundaries fall is the strategy's
//! business ([`ClaimStrategy`]); how each transaction begins is the policy's
//! (`LAB_TXN_MODE`).
//!
//! - `toaster`: [`read_phase`] in one transaction, then [`write_as_read`] in
//!   another: it reads the free environments and locks them (a read-then-write
//!   inside one transaction), and saves the request it read earlier without a
//!   condition, so two schedulers can both claim it.
//! - `single`: [`read_phase`] and [`write_as_read`] in one transaction.
//! - `guarded`: [`read_phase`] outside any transaction, then [`write_guarded`]:
//!   conditional updates whose rows-affected say who won. No read-then-write.
//!
//! All three book every environment a request needs, or none.

use std::collections::BTreeMap;

use diesel::sqlite::SqliteConnection;
use serde::Serialize;

use crate::error::TxError;
use crate::models::{Booking, Build, BuildRequest, Environment, Needs, QueuedRequest};
use crate::settings::ClaimStrategy;
use crate::types::{BuildId, EnvironmentId, RequestId, RequestState};

/// How many queued requests the read phase looks at.
pub const QUEUE_SCAN: i64 = 200;

/// What the read phase decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Nothing queued.
    Idle { queued: usize },
    /// Requests are queued but none fits the free environments now. Toaster's
    /// runbuilds then saves the oldest one back as queued ("postpone the
    /// request") inside its environment transaction: see [`postpone`].
    Postpone {
        request: RequestId,
        needs: Needs,
        queued: usize,
    },
    /// A request no registered environments could ever satisfy.
    Unsatisfiable { request: RequestId, reason: String },
    /// Claim this request with these environments.
    Claim {
        request: RequestId,
        needs: Needs,
        environments: Vec<EnvironmentId>,
    },
}

/// A successful claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Claimed {
    pub request: RequestId,
    pub build: BuildId,
    pub environments: Vec<EnvironmentId>,
}

/// Picks free environments for `needs`, or None if they do not fit now.
fn fit(needs: &Needs, free: &[Environment]) -> Option<Vec<EnvironmentId>> {
    let mut chosen = Vec::new();
    for (kind, want) in &needs.0 {
        let of_kind: Vec<EnvironmentId> = free
            .iter()
            .filter(|e| &e.kind == kind)
            .map(|e| e.id)
            .collect();
        if of_kind.len() < *want as usize {
            return None;
        }
        chosen.extend(of_kind.into_iter().take(*want as usize));
    }
    Some(chosen)
}

/// The read phase: the oldest queued request (priority DESC, created_at, id)
/// that the free environments can satisfy now. A request that cannot be booked
/// now stays queued while smaller ones go ahead.
pub fn read_phase(conn: &mut SqliteConnection) -> diesel::QueryResult<Plan> {
    let queued: Vec<QueuedRequest> = BuildRequest::queued_in_order(conn, QUEUE_SCAN)?;
    if queued.is_empty() {
        return Ok(Plan::Idle { queued: 0 });
    }
    let capacity: BTreeMap<String, u32> = Environment::capacity(conn)?;
    let free = Environment::free(conn)?;
    for q in &queued {
        if q.needs.0.is_empty() {
            return Ok(Plan::Unsatisfiable {
                request: q.id,
                reason: "needs no environment".to_string(),
            });
        }
        if let Some(reason) = q.needs.unsatisfiable_by(&capacity) {
            return Ok(Plan::Unsatisfiable {
                request: q.id,
                reason,
            });
        }
        if let Some(environments) = fit(&q.needs, &free) {
            return Ok(Plan::Claim {
                request: q.id,
                needs: q.needs.clone(),
                environments,
            });
        }
    }
    let oldest = &queued[0];
    Ok(Plan::Postpone {
        request: oldest.id,
        needs: oldest.needs.clone(),
        queued: queued.len(),
    })
}

/// What Toaster's runbuilds does when no environment is free for the request
/// it selected: inside the environment transaction it reads the free
/// environments, finds none that fit, and saves the request back as queued
/// (`br.state = REQ_QUEUED; br.save()`). A read, then a write, in one
/// transaction, on every poll while requests wait. (The guarded strategy
/// writes nothing in this case.)
pub fn postpone(
    conn: &mut SqliteConnection,
    request: RequestId,
    needs: &Needs,
) -> Result<usize, TxError> {
    let kinds: Vec<&str> = needs.0.keys().map(String::as_str).collect();
    let free = Environment::free_of_kinds(conn, &kinds)?;
    if fit(needs, &free).is_some() {
        // An environment came free since the read phase: the next poll claims.
        return Ok(0);
    }
    Ok(BuildRequest::set_state(
        conn,
        request,
        RequestState::Queued,
    )?)
}

/// Toaster's write: read the free environments of the needed kinds and lock
/// them (read then write, in one transaction), then save the request as
/// inprogress whatever its state now is, and create its build.
pub fn write_as_read(
    conn: &mut SqliteConnection,
    request: RequestId,
    needs: &Needs,
    claimed_by: &str,
    seed: i64,
    lease_until: i64,
) -> Result<Claimed, TxError> {
    let kinds: Vec<&str> = needs.0.keys().map(String::as_str).collect();
    let free = Environment::free_of_kinds(conn, &kinds)?;
    let environments =
        fit(needs, &free).ok_or_else(|| TxError::abort("environments taken since the read"))?;
    Environment::lock_for(conn, &environments, request, lease_until)?;
    Booking::book_all(conn, &environments, request, claimed_by)?;
    BuildRequest::set_state(conn, request, RequestState::InProgress)?;
    let build = Build::create(conn, request, claimed_by, seed, lease_until)?;
    Ok(Claimed {
        request,
        build,
        environments,
    })
}

/// The guarded write: the request moves from queued to inprogress only if it is
/// still queued, and each environment is locked only if it is still free. Any
/// lost race rolls the whole claim back. Every statement is a write, so the
/// transaction never upgrades from reader to writer.
pub fn write_guarded(
    conn: &mut SqliteConnection,
    request: RequestId,
    environments: &[EnvironmentId],
    claimed_by: &str,
    seed: i64,
    lease_until: i64,
) -> Result<Claimed, TxError> {
    if BuildRequest::transition(
        conn,
        request,
        RequestState::Queued,
        RequestState::InProgress,
        None,
    )? != 1
    {
        return Err(TxError::abort("request no longer queued"));
    }
    for env in environments {
        if Environment::lock_if_free(conn, *env, request, lease_until)? != 1 {
            return Err(TxError::abort("environment no longer free"));
        }
    }
    Booking::book_all(conn, environments, request, claimed_by)?;
    let build = Build::create(conn, request, claimed_by, seed, lease_until)?;
    Ok(Claimed {
        request,
        build,
        environments: environments.to_vec(),
    })
}

/// Whether the strategy reads inside a transaction of its own before writing.
pub fn reads_in_own_transaction(strategy: ClaimStrategy) -> bool {
    matches!(strategy, ClaimStrategy::Toaster)
}

/// Requests whose builds are all completed but whose environments are still
/// held: what [`release_completed`] would release. A read, for the scheduler
/// to decide whether to open a write transaction at all.
pub fn releasable(conn: &mut SqliteConnection) -> diesel::QueryResult<Vec<RequestId>> {
    let held = Environment::held(conn)?;
    let mut requests: Vec<RequestId> = held.iter().filter_map(|e| e.request_id).collect();
    requests.sort();
    requests.dedup();
    let mut done = Vec::new();
    for r in requests {
        let builds = Build::for_request(conn, r)?;
        if !builds.is_empty() && builds.iter().all(|b| b.completed_at.is_some()) {
            done.push(r);
        }
    }
    Ok(done)
}

/// Releases the given requests' environments and bookings (write first).
pub fn release(conn: &mut SqliteConnection, requests: &[RequestId]) -> diesel::QueryResult<usize> {
    let freed = Environment::free_for_requests(conn, requests)?;
    Booking::release_for_requests(conn, requests)?;
    Ok(freed)
}
