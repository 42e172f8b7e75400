//! Queue wait and `queued_while_free`, from the rows alone.
//!
//! - A request's queue wait runs from its `created_at` to its claim: the
//!   `started_at` of the first build a scheduler claimed for it. A request
//!   still queued counts with its wait so far (up to `as_of`).
//! - The environments free at a moment are the registered ones minus those
//!   with a booking open at that moment (a booking is open from `booked_at`
//!   until `released_at`, or for ever). A booking a rollback failed to undo
//!   (MyISAM) stays open, so its environment never counts as free.
//! - A request was *queued while free* when, after it had waited
//!   [`GRACE`], there was a moment before its claim at which the free
//!   environments could have satisfied all its needs. The grace leaves a
//!   scheduler its poll interval and a claim's own time.

use std::collections::{BTreeMap, HashMap};

use schema::models::Needs;
use schema::types::{EnvironmentId, RequestId};
use serde::{Deserialize, Serialize};

/// How long a request may wait while environments that fit it are free
/// before it counts as queued while free.
pub const GRACE_US: i64 = 5_000_000;
/// [`GRACE_US`] as text, for messages.
pub const GRACE: &str = "5 s";

/// `queue_wait_ms` of report.json: submit to claim.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueWait {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    /// How many requests it covers (added field).
    #[serde(default)]
    pub requests: u64,
}

/// One request, as the queue measures it.
#[derive(Debug, Clone)]
pub struct QueuedFact {
    pub id: RequestId,
    pub needs: Needs,
    pub created_at: i64,
    /// When a scheduler claimed it, if one did.
    pub claimed_at: Option<i64>,
    /// Still queued now (a request that failed or was cancelled unclaimed
    /// has no wait).
    pub still_queued: bool,
}

/// One booking: an environment held from `from` until `until` (None: still).
#[derive(Debug, Clone, Copy)]
pub struct Held {
    pub environment: EnvironmentId,
    pub from: i64,
    pub until: Option<i64>,
}

/// What the queue measures.
#[derive(Debug, Clone, Default)]
pub struct QueueFindings {
    pub wait: Option<QueueWait>,
    /// Requests queued while free, with the moment (µs) it was first seen.
    pub queued_while_free: Vec<(RequestId, i64)>,
}

/// Measures the queue. `kinds` maps each registered environment to its kind.
pub fn measure(
    requests: &[QueuedFact],
    kinds: &HashMap<EnvironmentId, String>,
    bookings: &[Held],
    as_of: i64,
) -> QueueFindings {
    let mut waits: Vec<i64> = Vec::new();
    for r in requests {
        let end = match (r.claimed_at, r.still_queued) {
            (Some(at), _) => at,
            (None, true) => as_of,
            (None, false) => continue,
        };
        waits.push((end - r.created_at).max(0));
    }
    waits.sort_unstable();
    let wait = (!waits.is_empty()).then(|| {
        let pick = |q: f64| {
            let i = ((waits.len() as f64 - 1.0) * q).round() as usize;
            waits[i.min(waits.len() - 1)] as f64 / 1000.0
        };
        QueueWait {
            p50: pick(0.5),
            p99: pick(0.99),
            max: waits.last().copied().unwrap_or(0) as f64 / 1000.0,
            requests: waits.len() as u64,
        }
    });

    // The free count of each kind as a step function: change points in time
    // order, each with the free counts from then on.
    let mut capacity: BTreeMap<&str, i64> = BTreeMap::new();
    for kind in kinds.values() {
        *capacity.entry(kind.as_str()).or_default() += 1;
    }
    let mut changes: Vec<(i64, &str, i64)> = Vec::new();
    for b in bookings {
        let Some(kind) = kinds.get(&b.environment) else {
            continue;
        };
        changes.push((b.from, kind, -1));
        if let Some(until) = b.until {
            changes.push((until, kind, 1));
        }
    }
    changes.sort_by_key(|c| c.0);
    let mut steps: Vec<(i64, BTreeMap<&str, i64>)> = vec![(i64::MIN, capacity.clone())];
    let mut free = capacity;
    for (at, kind, delta) in changes {
        *free.entry(kind).or_default() += delta;
        match steps.last_mut() {
            Some(last) if last.0 == at => last.1 = free.clone(),
            _ => steps.push((at, free.clone())),
        }
    }
    let fits = |needs: &Needs, free: &BTreeMap<&str, i64>| {
        needs
            .0
            .iter()
            .all(|(kind, want)| free.get(kind.as_str()).copied().unwrap_or(0) >= i64::from(*want))
    };

    let mut queued_while_free = Vec::new();
    for r in requests {
        let end = match (r.claimed_at, r.still_queued) {
            (Some(at), _) => at,
            (None, true) => as_of,
            (None, false) => continue,
        };
        if r.needs.0.is_empty() || end <= r.created_at {
            continue;
        }
        // Walk the steps in force during [created_at, end); a run of steps
        // that fit, lasting GRACE or more, counts.
        let first = steps
            .partition_point(|s| s.0 <= r.created_at)
            .saturating_sub(1);
        let mut run_start: Option<i64> = None;
        for (i, (at, free)) in steps.iter().enumerate().skip(first) {
            let at = (*at).max(r.created_at);
            if i > first && at >= end {
                break;
            }
            match (fits(&r.needs, free), run_start) {
                (true, None) => run_start = Some(at),
                (false, Some(start)) => {
                    if at - start >= GRACE_US {
                        break;
                    }
                    run_start = None;
                }
                _ => {}
            }
        }
        if let Some(start) = run_start {
            // A run still going at the end counts up to the end; a run that
            // ended long enough counted above (the loop broke with it set).
            let until = steps
                .iter()
                .find(|(at, free)| *at > start && !fits(&r.needs, free))
                .map(|(at, _)| (*at).min(end))
                .unwrap_or(end);
            if until - start >= GRACE_US {
                queued_while_free.push((r.id, start));
            }
        }
    }
    QueueFindings {
        wait,
        queued_while_free,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs(kind: &str, n: u32) -> Needs {
        Needs([(kind.to_string(), n)].into_iter().collect())
    }

    #[test]
    fn waits_and_queued_while_free() {
        let kinds: HashMap<EnvironmentId, String> = [
            (EnvironmentId(1), "a".to_string()),
            (EnvironmentId(2), "a".to_string()),
        ]
        .into_iter()
        .collect();
        let s = 1_000_000;
        // Both environments busy from 0 to 20 s; one frees at 20 s.
        let bookings = [
            Held {
                environment: EnvironmentId(1),
                from: 0,
                until: Some(20 * s),
            },
            Held {
                environment: EnvironmentId(2),
                from: 0,
                until: None,
            },
        ];
        let requests = [
            // claimed 1 s after an environment came free: not counted
            QueuedFact {
                id: RequestId(1),
                needs: needs("a", 1),
                created_at: 10 * s,
                claimed_at: Some(21 * s),
                still_queued: false,
            },
            // still queued at 60 s while one was free from 20 s: counted
            QueuedFact {
                id: RequestId(2),
                needs: needs("a", 1),
                created_at: 30 * s,
                claimed_at: None,
                still_queued: true,
            },
            // needs two: never fits, not counted
            QueuedFact {
                id: RequestId(3),
                needs: needs("a", 2),
                created_at: 30 * s,
                claimed_at: None,
                still_queued: true,
            },
        ];
        let f = measure(&requests, &kinds, &bookings, 60 * s);
        assert_eq!(f.queued_while_free, vec![(RequestId(2), 30 * s)]);
        let w = f.wait.expect("waits");
        assert_eq!(w.requests, 3);
        assert_eq!(w.max, 30_000.0);
        assert_eq!(w.p50, 30_000.0);
    }
}
