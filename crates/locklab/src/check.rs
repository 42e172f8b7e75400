//! `locklab check`: counts each invariant, with example ids. It regenerates
//! every build's stream from its seed, so it knows what was emitted without
//! trusting the ingester's counters. Counts that need the loadgen's log are
//! null without it, never 0.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use schema::db::{DbTarget, LabConn, Policy};
use schema::models::{Booking, Build, BuildEvent, BuildRequest, Environment};
use schema::stream::generate;
use schema::types::{now_micros, LockState, Outcome, RequestId, RequestState};
use serde::{Deserialize, Serialize};

/// The check object of report.json.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckCounts {
    /// Rows promised by a 2xx that are missing, plus emitted events of
    /// completed builds that are missing. Null without the loadgen log.
    pub lost: Option<u64>,
    /// Rows beyond what a 2xx promised, plus events stored twice. Null without
    /// the loadgen log.
    pub duplicated: Option<u64>,
    pub mismatched: u64,
    pub double_claimed: u64,
    pub double_booked: u64,
    pub leaked_bookings: u64,
    /// Rows whose HTTP request got a failure status. Null without the log.
    pub partial_writes: Option<u64>,
    pub stuck: u64,
    /// Rows whose HTTP request got no response (reported, not a violation).
    pub unconfirmed: Option<u64>,
    /// Builds still owned by a live ingester (reported, not a violation).
    pub unfinished: u64,
    /// SQLite's `PRAGMA integrity_check` passed. Null on a server, which has
    /// no such check the lab can run (its own consistency is the server's).
    pub integrity_ok: Option<bool>,
    /// The events part of `lost`, known without the log (added field).
    #[serde(default)]
    pub lost_events: u64,
    /// The events part of `duplicated` (added field).
    #[serde(default)]
    pub duplicated_events: u64,
    /// Rows whose X-Request-Id is not in the loadgen log: nobody asked for
    /// them (added field; null without the log).
    #[serde(default)]
    pub unlogged: Option<u64>,
    /// Ids a 2xx returned that belong to another HTTP request, or to no row
    /// of this one (added field; null without the log).
    #[serde(default)]
    pub misattributed: Option<u64>,
    /// Stored events beyond their build's `events_expected` (added field).
    #[serde(default)]
    pub beyond_expected: u64,
    /// The part of `stuck` whose build no ingester ever took (it waited for
    /// one until the drain ended; added field).
    #[serde(default)]
    pub stuck_untaken: u64,
    /// Build rows no request points at and no scheduler filled: what Toaster's
    /// create leaves behind when it fails part way (reported, not a violation;
    /// added field).
    #[serde(default)]
    pub orphaned_builds: u64,
    /// Requests left queued while environments that could satisfy them were
    /// free for 5 s or more without a break: a scheduler that does not see
    /// them (reported, not a violation; added field).
    #[serde(default)]
    pub queued_while_free: u64,
    /// Booking rows a claim that rolled back left behind: a request's
    /// bookings beyond what its claims booked (all of them, for a request
    /// never claimed). A transactional database leaves none; MyISAM keeps
    /// every row written before the ROLLBACK (added field).
    #[serde(default)]
    pub leaked_partial_bookings: u64,
}

impl CheckCounts {
    /// Whether any invariant is violated (unconfirmed and unfinished are not).
    pub fn violations(&self) -> u64 {
        self.lost.unwrap_or(self.lost_events)
            + self.duplicated.unwrap_or(self.duplicated_events)
            + self.mismatched
            + self.double_claimed
            + self.double_booked
            + self.leaked_bookings
            + self.leaked_partial_bookings
            + self.partial_writes.unwrap_or(0)
            + self.stuck
            + self.unlogged.unwrap_or(0)
            + self.misattributed.unwrap_or(0)
            + self.beyond_expected
            + u64::from(self.integrity_ok == Some(false))
    }

    /// The counts that could not be checked (null without the loadgen log).
    pub fn unchecked(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        for (name, value) in [
            ("lost rows", self.lost),
            ("duplicated rows", self.duplicated),
            ("partial_writes", self.partial_writes),
            ("unconfirmed", self.unconfirmed),
            ("unlogged", self.unlogged),
            ("misattributed", self.misattributed),
        ] {
            if value.is_none() {
                v.push(name);
            }
        }
        v
    }
}

/// One line of the loadgen's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub request_id: String,
    /// HTTP status, or null when no response came.
    pub status: Option<u16>,
    pub latency_ms: f64,
    #[serde(default)]
    pub ids: Vec<i64>,
    #[serde(default)]
    pub client: u32,
    /// A 2xx whose body could not be read: its ids are unknown.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unreadable: bool,
}

pub fn read_log(path: &Path) -> anyhow::Result<Vec<LogLine>> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("opening the loadgen log {}", path.display()))?;
    let mut lines = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<LogLine>(&line) {
            Ok(l) => lines.push(l),
            // a torn last line (the loadgen was killed) is not data
            Err(e) => log::warn!(
                "{}:{}: skipped a line that is not a loadgen record: {e}",
                path.display(),
                i + 1
            ),
        }
    }
    Ok(lines)
}

/// A check's result: the counts and up to a few example ids per invariant.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckResult {
    pub counts: CheckCounts,
    pub examples: BTreeMap<&'static str, Vec<String>>,
    /// Submit to claim (report.json's top-level `queue_wait_ms`).
    pub queue_wait_ms: Option<crate::queue::QueueWait>,
}

const EXAMPLES: usize = 5;

impl CheckResult {
    fn example(&mut self, what: &'static str, text: impl FnOnce() -> String) {
        let list = self.examples.entry(what).or_default();
        if list.len() < EXAMPLES {
            list.push(text());
        }
    }
}

/// Runs every check. `as_of` (µs) decides which leases count as live; a run
/// passes the moment its drain ended.
pub fn check(
    target: &DbTarget,
    log: Option<&[LogLine]>,
    as_of: Option<i64>,
) -> anyhow::Result<CheckResult> {
    schema::migrate::startup_check(target).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut conn = LabConn::open(target, Arc::new(Policy::default()), false)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let c = conn.diesel();
    let as_of = as_of.unwrap_or_else(now_micros);
    let mut r = CheckResult::default();

    if target.sqlite_path().is_some() {
        let integrity = schema::migrate::integrity_check(c).context("PRAGMA integrity_check")?;
        r.counts.integrity_ok = Some(integrity == ["ok"]);
        if integrity != ["ok"] {
            for problem in integrity.iter().take(EXAMPLES) {
                r.example("integrity", || problem.clone());
            }
        }
    }

    // Rows against the HTTP answers.
    let rows = BuildRequest::ids_by_client_request(c).context("reading requests")?;
    let mut by_client: HashMap<&str, Vec<RequestId>> = HashMap::new();
    let existing: std::collections::HashSet<RequestId> = rows.iter().map(|(_, id)| *id).collect();
    for (client, id) in &rows {
        if let Some(client) = client {
            by_client.entry(client.as_str()).or_default().push(*id);
        }
    }
    let (mut lost_rows, mut dup_rows, mut partial, mut unconfirmed) = (0u64, 0u64, 0u64, 0u64);
    let (mut unlogged, mut misattributed) = (0u64, 0u64);
    if let Some(log) = log {
        let owner: HashMap<RequestId, &str> = rows
            .iter()
            .filter_map(|(client, id)| client.as_deref().map(|c| (*id, c)))
            .collect();
        let logged: std::collections::HashSet<&str> =
            log.iter().map(|l| l.request_id.as_str()).collect();
        for (client, id) in &rows {
            if !client.as_deref().is_some_and(|c| logged.contains(c)) {
                unlogged += 1;
                r.example("unlogged", || {
                    format!(
                        "request {id} (X-Request-Id {})",
                        client.as_deref().unwrap_or("none")
                    )
                });
            }
        }
        for line in log {
            let stored = by_client
                .get(line.request_id.as_str())
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            match line.status {
                Some(s) if (200..300).contains(&s) && line.unreadable => {
                    // The rows were promised, but we cannot know which.
                    unconfirmed += stored.len() as u64;
                    if !stored.is_empty() {
                        r.example("unconfirmed", || {
                            format!(
                                "{} rows of X-Request-Id {} (answered {s}, body unreadable)",
                                stored.len(),
                                line.request_id
                            )
                        });
                    }
                }
                Some(s) if (200..300).contains(&s) => {
                    for id in &line.ids {
                        let id = RequestId(*id);
                        if !existing.contains(&id) {
                            lost_rows += 1;
                            r.example("lost", || {
                                format!("request {id} (X-Request-Id {})", line.request_id)
                            });
                        } else if owner.get(&id).copied() != Some(line.request_id.as_str()) {
                            misattributed += 1;
                            r.example("misattributed", || {
                                format!(
                                    "request {id} returned to X-Request-Id {} belongs to {}",
                                    line.request_id,
                                    owner.get(&id).copied().unwrap_or("no request id")
                                )
                            });
                        }
                    }
                    let extra = stored.len().saturating_sub(line.ids.len()) as u64;
                    if extra > 0 {
                        dup_rows += extra;
                        r.example("duplicated", || {
                            format!(
                                "{} rows for X-Request-Id {} (promised {})",
                                stored.len(),
                                line.request_id,
                                line.ids.len()
                            )
                        });
                    }
                }
                Some(s) => {
                    if !stored.is_empty() {
                        partial += stored.len() as u64;
                        r.example("partial_writes", || {
                            format!(
                                "requests {:?} written by X-Request-Id {} answered {s}",
                                stored.iter().map(|i| i.0).collect::<Vec<_>>(),
                                line.request_id
                            )
                        });
                    }
                }
                None => {
                    unconfirmed += stored.len() as u64;
                    if !stored.is_empty() {
                        r.example("unconfirmed", || {
                            format!(
                                "{} rows of X-Request-Id {} (no response)",
                                stored.len(),
                                line.request_id
                            )
                        });
                    }
                }
            }
        }
    }

    // Bookings before builds: a claim writes its bookings and its build in
    // one transaction, so every booking read here has its build visible to
    // the read below, even while schedulers go on claiming (compose checks a
    // live lab). The other order counts a claim that committed in between as
    // bookings without a claim.
    let bookings = Booking::all(c).context("reading bookings")?;
    // Builds and their streams.
    let builds = Build::all(c).context("reading builds")?;
    // A double claim: a request with more than one build. Under Toaster's
    // create shape the first claim fills the Build row webui made; a second
    // claim finds it filled and makes a build of its own, so it shows here too.
    let doubles = Build::double_claims(c).context("reading double claims")?;
    r.counts.double_claimed = doubles.len() as u64;
    for (req, ids) in doubles.iter().take(EXAMPLES) {
        r.example("double_claimed", || {
            format!(
                "request {req} has builds {:?}",
                ids.iter().map(|b| b.0).collect::<Vec<_>>()
            )
        });
    }
    let orphans = Build::orphans(c).context("reading orphaned builds")?;
    r.counts.orphaned_builds = orphans.len() as u64;
    for b in orphans.iter().take(EXAMPLES) {
        r.example("orphaned_builds", || format!("build {b} has no request"));
    }
    let (mut lost_events, mut dup_events, mut mismatched) = (0u64, 0u64, 0u64);
    for b in &builds {
        let stored = BuildEvent::for_build(c, b.id).context("reading events")?;
        let Some(seed) = b.seed else {
            // A Build row nobody filled: it has no stream, so no event.
            for e in &stored {
                mismatched += 1;
                r.example("mismatched", || {
                    format!("build {} has no seed but holds seq {}", b.id, e.seq)
                });
            }
            continue;
        };
        let max_seq = stored.iter().map(|e| e.seq).max().unwrap_or(-1);
        if let Some(want) = b.events_expected {
            let beyond = stored.iter().filter(|e| e.seq >= want).count() as u64;
            if beyond > 0 {
                r.counts.beyond_expected += beyond;
                r.example("beyond_expected", || {
                    format!(
                        "build {} holds {beyond} events beyond its {want} expected",
                        b.id
                    )
                });
            }
        }
        let expected = b.events_expected.unwrap_or(0).max(max_seq + 1).max(0) as u32;
        let emitted = generate(seed, expected);
        let mut seen = vec![0u32; expected as usize];
        for e in &stored {
            let Some(slot) = usize::try_from(e.seq).ok().filter(|s| *s < seen.len()) else {
                mismatched += 1;
                r.example("mismatched", || {
                    format!("build {} seq {} is outside its stream", b.id, e.seq)
                });
                continue;
            };
            seen[slot] += 1;
            if seen[slot] > 1 {
                dup_events += 1;
                r.example("duplicated", || {
                    format!("build {} seq {} stored twice", b.id, e.seq)
                });
            }
            let want = &emitted[slot];
            if want.kind != e.kind || want.name != e.name || want.payload != e.payload {
                mismatched += 1;
                r.example("mismatched", || {
                    format!("build {} seq {} (event id {})", b.id, e.seq, e.id)
                });
            }
        }
        // Every event of a build that ran to its end was emitted.
        if b.outcome == Some(Outcome::Succeeded) {
            let want = b.events_expected.unwrap_or(0).max(0) as usize;
            for (seq, n) in seen.iter().enumerate().take(want) {
                if *n == 0 {
                    lost_events += 1;
                    r.example("lost", || format!("build {} seq {seq}", b.id));
                }
            }
        }
        if b.completed_at.is_none() && b.owner.is_some() && b.lease_until.is_some_and(|l| l > as_of)
        {
            r.counts.unfinished += 1;
            r.example("unfinished", || {
                format!(
                    "build {} owned by {}",
                    b.id,
                    b.owner.clone().unwrap_or_default()
                )
            });
        }
    }
    r.counts.mismatched = mismatched;
    r.counts.lost_events = lost_events;
    r.counts.duplicated_events = dup_events;
    if log.is_some() {
        r.counts.lost = Some(lost_rows + lost_events);
        r.counts.duplicated = Some(dup_rows + dup_events);
        r.counts.partial_writes = Some(partial);
        r.counts.unconfirmed = Some(unconfirmed);
        r.counts.unlogged = Some(unlogged);
        r.counts.misattributed = Some(misattributed);
    }

    // The queue: waits, and requests left queued while they could run.
    {
        // Per request: its claims (builds a scheduler made or filled) and
        // the first claim's time.
        let mut claimed: HashMap<RequestId, i64> = HashMap::new();
        let mut claims: HashMap<RequestId, u64> = HashMap::new();
        for b in builds.iter().filter(|b| b.claimed_by.is_some()) {
            if let Some(req) = b.request_id {
                let at = claimed.entry(req).or_insert(b.started_at);
                *at = (*at).min(b.started_at);
                *claims.entry(req).or_default() += 1;
            }
        }
        let facts: Vec<crate::queue::QueuedFact> = BuildRequest::queue_facts(c)
            .context("reading requests")?
            .into_iter()
            .map(|(id, state, needs, created_at)| crate::queue::QueuedFact {
                id,
                needs,
                created_at,
                claimed_at: claimed.get(&id).copied(),
                still_queued: state == RequestState::Queued,
            })
            .collect();
        let kinds: HashMap<_, _> = Environment::all(c)
            .context("reading environments")?
            .into_iter()
            .map(|e| (e.id, e.kind))
            .collect();
        let mut booked: HashMap<RequestId, u64> = HashMap::new();
        for b in &bookings {
            *booked.entry(b.request_id).or_default() += 1;
        }
        for f in &facts {
            let n = booked.get(&f.id).copied().unwrap_or(0);
            let claimed = claims.get(&f.id).copied().unwrap_or(0);
            let expected = u64::from(f.needs.total()) * claimed;
            if n > expected {
                r.counts.leaked_partial_bookings += n - expected;
                r.example("leaked_partial_bookings", || {
                    format!(
                        "request {} has {n} bookings; its {claimed} claim(s) booked {expected}",
                        f.id
                    )
                });
            }
        }
        let held: Vec<crate::queue::Held> = bookings
            .into_iter()
            .map(|b| crate::queue::Held {
                environment: b.environment_id,
                from: b.booked_at,
                until: b.released_at,
            })
            .collect();
        let found = crate::queue::measure(&facts, &kinds, &held, as_of);
        r.queue_wait_ms = found.wait;
        r.counts.queued_while_free = found.queued_while_free.len() as u64;
        for (req, at) in found.queued_while_free.iter().take(EXAMPLES) {
            r.example("queued_while_free", || {
                format!(
                    "request {req} queued while environments that fit it were free from {:.1} s before the end",
                    (as_of - at) as f64 / 1e6
                )
            });
        }
    }

    // Bookings and environments.
    let overlaps = Booking::overlaps(c).context("reading bookings")?;
    r.counts.double_booked = overlaps.len() as u64;
    for o in overlaps.iter().take(EXAMPLES) {
        r.example("double_booked", || {
            format!(
                "environment {}: bookings {} and {} overlap",
                o.environment_id, o.first, o.second
            )
        });
    }
    let live_states = [RequestState::InProgress, RequestState::Cancelling];
    let mut live_requests = std::collections::HashSet::new();
    for s in live_states {
        live_requests.extend(BuildRequest::ids_in_state(c, s).context("reading requests")?);
    }
    for e in Environment::held(c).context("reading environments")? {
        let live = e.request_id.is_some_and(|r| live_requests.contains(&r));
        if !live && e.lock_state != LockState::Free {
            r.counts.leaked_bookings += 1;
            r.example("leaked_bookings", || {
                format!(
                    "environment {} ({}) is {} for {}",
                    e.name,
                    e.id,
                    e.lock_state,
                    e.request_id
                        .map(|r| format!("request {r}, which is not in progress"))
                        .unwrap_or_else(|| "no request".to_string())
                )
            });
        }
    }
    for req in &live_requests {
        let owned = builds.iter().any(|b| {
            b.request_id == Some(*req)
                && b.completed_at.is_none()
                && b.owner.is_some()
                && b.lease_until.is_some_and(|l| l > as_of)
        });
        if !owned {
            r.counts.stuck += 1;
            let untaken = builds
                .iter()
                .filter(|b| b.request_id == Some(*req) && b.completed_at.is_none())
                .all(|b| b.owner.is_none());
            if untaken {
                r.counts.stuck_untaken += 1;
            }
            r.example("stuck", || {
                if untaken {
                    format!("request {req} is in progress; no ingester ever took its build")
                } else {
                    format!("request {req} is in progress with no live owner")
                }
            });
        }
    }
    Ok(r)
}
