//! What `single` and `guarded` share (the queue read and the fit of needs to
//! free environments), and what every strategy shares (releasing finished
//! requests' environments, expiring dead builds).

use std::collections::BTreeMap;

use crate::backend::Conn;

use super::{gave_up_or_lost, ClaimCtx, Plan, Step};
use crate::db::LabConn;
use crate::models::{Booking, Build, BuildRequest, Environment, Needs, QueuedRequest};
use crate::types::{now_micros, EnvironmentId, RequestId, RequestState};

/// How many queued requests the read phase looks at.
pub const QUEUE_SCAN: i64 = 200;

/// Picks free environments for `needs`, or None if they do not fit now.
pub fn fit(needs: &Needs, free: &[Environment]) -> Option<Vec<EnvironmentId>> {
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

/// The queue read of `single` and `guarded`: the oldest queued request
/// (priority DESC, created_at, id) that the free environments can satisfy
/// now. A request that cannot be booked now stays queued while smaller ones
/// go ahead.
pub fn read_phase(conn: &mut Conn) -> diesel::QueryResult<Plan> {
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
    Ok(Plan::Wait {
        queued: queued.len(),
    })
}

/// Requests whose builds are all completed but whose environments are still
/// held: what [`release`] would release. A read, to decide whether to open a
/// write transaction at all.
pub fn releasable(conn: &mut Conn) -> diesel::QueryResult<Vec<RequestId>> {
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

/// Releases the given requests' environments and bookings (the environments
/// first, so the bookings' release time is taken with the lock held).
pub fn release(conn: &mut Conn, requests: &[RequestId]) -> diesel::QueryResult<usize> {
    let freed = Environment::free_for_requests(conn, requests)?;
    let closed = Booking::release_for_requests(conn, requests)?;
    Ok(freed + closed)
}

/// Releases the environments of requests whose builds all completed and
/// that their ingester did not free (it frees them when it finishes).
pub fn release_finished(ctx: &ClaimCtx, conn: &mut LabConn) -> Option<Step> {
    let candidates = match ctx
        .lab
        .op("find_releasable", |op| op.read(conn, releasable))
    {
        Ok(c) => c,
        Err(e) => return Some(gave_up_or_lost(e)),
    };
    if candidates.is_empty() {
        return None;
    }
    let result = ctx.lab.op("release", |op| {
        op.write(conn, |tx| {
            tx.counted(|c| release(c, &candidates))?;
            Ok(())
        })
    });
    Some(match result {
        Ok(()) => Step::Released(candidates),
        Err(e) => gave_up_or_lost(e),
    })
}

/// Fails builds whose ingester's lease ran out more than a lease ago (it
/// crashed and nobody took over): a read, and a write only when one is found.
pub fn expire(ctx: &ClaimCtx, conn: &mut LabConn) -> Option<Step> {
    let lease_us = i64::try_from(ctx.lease.as_micros()).unwrap_or(i64::MAX / 2);
    let cutoff = now_micros() - lease_us;
    let stale = match ctx.lab.op("find_expired", |op| {
        op.read(conn, |c| Build::expirable(c, cutoff))
    }) {
        Ok(n) => n,
        Err(e) => return Some(gave_up_or_lost(e)),
    };
    if stale == 0 {
        return None;
    }
    let result = ctx.lab.op("expire", |op| {
        op.write(conn, |tx| {
            let mut requests = Vec::new();
            tx.counted(|c| {
                let (n, r) = Build::expire(c, cutoff)?;
                requests = r;
                Ok(n)
            })?;
            for r in &requests {
                // Only a request still running fails: the duplicate build of
                // a double-claimed request must not undo a completion.
                for from in [RequestState::InProgress, RequestState::Cancelling] {
                    let reason = Some("lease expired: the ingester stopped renewing");
                    tx.counted(|c| {
                        BuildRequest::transition(c, *r, from, RequestState::Failed, reason)
                    })?;
                }
            }
            // The dead builds' environments come free with them.
            tx.counted(|c| release(c, &requests))?;
            Ok(requests)
        })
    });
    Some(match result {
        Ok(requests) => {
            if !requests.is_empty() {
                log::warn!(
                    "{}: lease expired for requests {:?}: their ingester stopped renewing; failed them",
                    ctx.name(),
                    requests
                );
            }
            Step::Expired(requests)
        }
        Err(e) => gave_up_or_lost(e),
    })
}

/// What a poll sees: the queue, the newest request and the free
/// environments, as the connection's snapshot shows them.
pub fn poll_seen(
    conn: &mut Conn,
    txn_started_us: i64,
) -> diesel::QueryResult<crate::trace::PollSeen> {
    Ok(crate::trace::PollSeen {
        queued: u64::try_from(BuildRequest::queue_length(conn)?).unwrap_or(0),
        max_request_id: BuildRequest::max_id(conn)?,
        free: Environment::free(conn)?.len() as u64,
        txn_started_us,
    })
}
