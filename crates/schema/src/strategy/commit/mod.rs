//! How buildinfohelper writes a build's event stream (`LAB_COMMIT`), one file
//! per policy, each owning its transaction boundaries:
//!
//! - [`per_event`]: every event autocommits (`write_event`);
//! - [`batch`]: one transaction per N events (`write_batch`);
//! - [`toaster_sync`]: `every-3-tasks`, Toaster's buildinfohelper in Django's
//!   manual-transaction mode, at the SQL level (`save_task`, `save_event`,
//!   `bulk_packages`, `sync`).
//!
//! [`ingest`] is the loop they share: it resumes a build at max(seq) + 1,
//! paces the events (`LAB_EVENT_DELAY`), renews the lease, and ends the build
//! the policy's way. A write that finally fails is skipped and counted as
//! given up: the event is lost, and `check` reports it.

pub mod batch;
pub mod per_event;
pub mod toaster_sync;

use std::time::{Duration, Instant};

use crate::db::LabConn;
use crate::error::{OpError, TxError};
use crate::models::{Booking, Build, BuildEvent, BuildRequest, Environment};
use crate::ops::{sleep_unless_stopping, Lab, Op};
use crate::settings::CommitPolicy;
use crate::stream::{Generator, StreamEvent};
use crate::types::{now_micros, BuildId, Outcome, RequestState};

/// What the ingest loop needs from its daemon.
pub struct IngestCtx<'a> {
    pub lab: &'a Lab,
    pub lease: Duration,
    pub event_delay: Duration,
    /// Wakes runbuilds (SIGUSR1 or POST /wake), where the wake mode asks for it.
    pub notify: &'a (dyn Fn() + Sync),
}

impl IngestCtx<'_> {
    pub fn lease_until(&self) -> i64 {
        now_micros() + i64::try_from(self.lease.as_micros()).unwrap_or(i64::MAX / 2)
    }
}

/// Events written and given up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub written: u32,
    pub given_up: u32,
}

impl Tally {
    fn add(&mut self, t: Tally) {
        self.written += t.written;
        self.given_up += t.given_up;
    }

    fn of(n: usize, ok: bool) -> Tally {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        if ok {
            Tally {
                written: n,
                given_up: 0,
            }
        } else {
            Tally {
                written: 0,
                given_up: n,
            }
        }
    }
}

/// How one ingest ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// The build was ingested to its end and finished.
    Finished {
        build: BuildId,
        written: u32,
        given_up: u32,
    },
    /// Stopped before the end (shutdown, lost lease, cancelled, a failed end).
    Interrupted { build: BuildId, reason: String },
}

/// A commit policy.
pub trait Commit {
    /// The policy's name, as `LAB_COMMIT` spells it.
    fn name(&self) -> String;

    /// A build begins (the policy resets its state).
    fn start(&mut self, _conn: &mut LabConn) {}

    /// Writes one event now, or buffers it.
    fn event(
        &mut self,
        ctx: &IngestCtx<'_>,
        conn: &mut LabConn,
        build: BuildId,
        e: StreamEvent,
    ) -> Tally;

    /// Writes what is buffered.
    fn flush(&mut self, ctx: &IngestCtx<'_>, conn: &mut LabConn, build: BuildId) -> Tally;

    /// Ends the build: its outcome, the request's final state, its
    /// environments freed and their bookings closed, runbuilds notified.
    fn finish(
        &mut self,
        ctx: &IngestCtx<'_>,
        conn: &mut LabConn,
        build: &Build,
        outcome: Outcome,
        progress: Tally,
    ) -> Result<(), OpError> {
        let r = finish_in_one_transaction(ctx, conn, build, outcome, progress);
        (ctx.notify)();
        r
    }

    /// The process is stopping in the middle of a build: settle what is open.
    fn interrupt(&mut self, _ctx: &IngestCtx<'_>, _conn: &mut LabConn) {}
}

/// The policy of a `LAB_COMMIT` value.
pub fn policy(p: CommitPolicy) -> Box<dyn Commit + Send> {
    match p {
        CommitPolicy::PerEvent => Box::new(per_event::PerEvent),
        CommitPolicy::Batch(n) => Box::new(batch::Batch::new(n)),
        CommitPolicy::Every3Tasks => Box::new(toaster_sync::ToasterSync::default()),
    }
}

/// Inserts events of one build, counting the rows SQLite reports.
pub(crate) fn insert_events(
    tx: &mut crate::db::Tx<'_>,
    build: BuildId,
    events: &[StreamEvent],
) -> Result<usize, TxError> {
    Ok(tx.counted(|c| BuildEvent::insert(c, build, events))?)
}

/// The lab's end of a build, in one write transaction: the outcome and
/// progress, the request's final state, the request's environments freed
/// (first, so the bookings' release time is taken with the lock held) and
/// their bookings closed.
pub fn finish_in_one_transaction(
    ctx: &IngestCtx<'_>,
    conn: &mut LabConn,
    build: &Build,
    outcome: Outcome,
    progress: Tally,
) -> Result<(), OpError> {
    let owner = ctx.lab.process.clone();
    ctx.lab.op("finish", |op| {
        op.write(conn, |tx| {
            if tx.counted(|c| Build::finish(c, build.id, &owner, outcome))? == 0 {
                return Err(TxError::abort("the build is no longer ours"));
            }
            tx.counted(|c| {
                Build::add_progress(
                    c,
                    build.id,
                    progress.written as i32,
                    progress.given_up as i32,
                )
            })?;
            if let Some(r) = build.request_id {
                finish_request(tx, r, outcome)?;
                tx.counted(|c| Environment::free_for_requests(c, &[r]))?;
                tx.counted(|c| Booking::release_for_requests(c, &[r]))?;
            }
            Ok(())
        })
    })
}

/// The request's final state for a build's outcome (a cancelled request
/// fails).
pub(crate) fn finish_request(
    tx: &mut crate::db::Tx<'_>,
    r: crate::types::RequestId,
    outcome: Outcome,
) -> Result<(), TxError> {
    let done = match outcome {
        Outcome::Succeeded => RequestState::Completed,
        Outcome::Failed => RequestState::Failed,
    };
    tx.counted(|c| BuildRequest::transition(c, r, RequestState::InProgress, done, None))?;
    tx.counted(|c| {
        BuildRequest::transition(
            c,
            r,
            RequestState::Cancelling,
            RequestState::Failed,
            Some("cancelled"),
        )
    })?;
    Ok(())
}

enum Renewal {
    Kept,
    Lost,
    Cancelled,
}

/// Renews the lease and records progress: a write that, in manual mode with a
/// transaction open, is a savepoint inside it.
fn renew(
    ctx: &IngestCtx<'_>,
    op: &mut Op<'_>,
    conn: &mut LabConn,
    build: &Build,
    progress: Tally,
) -> Result<Renewal, OpError> {
    let owner = &ctx.lab.process;
    op.write(conn, |tx| {
        let lease_until = ctx.lease_until();
        if tx.counted(|c| Build::renew(c, build.id, owner, lease_until))? == 0 {
            return Ok(Renewal::Lost);
        }
        if progress != Tally::default() {
            tx.counted(|c| {
                Build::add_progress(
                    c,
                    build.id,
                    progress.written as i32,
                    progress.given_up as i32,
                )
            })?;
        }
        if let Some(r) = build.request_id {
            tx.counted(|c| Environment::renew_for_request(c, r, lease_until))?;
            let state = BuildRequest::get(tx.conn(), r)?.map(|r| r.state);
            if state == Some(RequestState::Cancelling) {
                return Ok(Renewal::Cancelled);
            }
        }
        Ok(Renewal::Kept)
    })
}

/// Ingests one taken build to its end (or until stopped), with `policy`.
pub fn ingest(
    ctx: &IngestCtx<'_>,
    conn: &mut LabConn,
    build: Build,
    policy: &mut dyn Commit,
) -> Ingested {
    let lab = ctx.lab;
    let expected = u32::try_from(build.events_expected.unwrap_or(0)).unwrap_or(0);
    let Some(seed) = build.seed else {
        return Ingested::Interrupted {
            build: build.id,
            reason: "the build has no seed (never claimed)".to_string(),
        };
    };
    let resume = match lab.op("resume", |op| {
        op.read(conn, |c| BuildEvent::max_seq(c, build.id))
    }) {
        Ok(max) => max.map(|m| u32::try_from(m + 1).unwrap_or(0)).unwrap_or(0),
        Err(_) => {
            return Ingested::Interrupted {
                build: build.id,
                reason: "could not read where to resume".to_string(),
            }
        }
    };
    if resume > 0 {
        log::info!(
            "{}: resuming build {} at seq {resume} of {expected}",
            lab.process,
            build.id
        );
    }
    policy.start(conn);
    let mut total = Tally::default();
    let mut unsaved = Tally::default();
    let renew_every = (ctx.lease / 3).max(Duration::from_millis(30));
    let mut last_renew = Instant::now();
    let stream = Generator::new(seed)
        .skip(resume as usize)
        .take(expected.saturating_sub(resume) as usize);
    for event in stream {
        if lab.is_stopping() {
            policy.interrupt(ctx, conn);
            return Ingested::Interrupted {
                build: build.id,
                reason: "shutting down".to_string(),
            };
        }
        if !ctx.event_delay.is_zero() {
            sleep_unless_stopping(ctx.event_delay, &lab.stopping);
        }
        let t = policy.event(ctx, conn, build.id, event);
        total.add(t);
        unsaved.add(t);
        if last_renew.elapsed() >= renew_every {
            last_renew = Instant::now();
            match lab.op("renew", |op| renew(ctx, op, conn, &build, unsaved)) {
                Ok(Renewal::Kept) => unsaved = Tally::default(),
                Ok(Renewal::Lost) => {
                    log::warn!(
                        "{}: lost the lease of build {} (another ingester took it); stopping it",
                        lab.process,
                        build.id
                    );
                    policy.interrupt(ctx, conn);
                    return Ingested::Interrupted {
                        build: build.id,
                        reason: "lease lost".to_string(),
                    };
                }
                Ok(Renewal::Cancelled) => {
                    let t = policy.flush(ctx, conn, build.id);
                    unsaved.add(t);
                    let _ = policy.finish(ctx, conn, &build, Outcome::Failed, unsaved);
                    return Ingested::Interrupted {
                        build: build.id,
                        reason: "cancelled".to_string(),
                    };
                }
                Err(_) => {} // counted and logged; try again at the next renewal
            }
        }
    }
    let t = policy.flush(ctx, conn, build.id);
    total.add(t);
    unsaved.add(t);
    match policy.finish(ctx, conn, &build, Outcome::Succeeded, unsaved) {
        Ok(()) => {
            if total.given_up > 0 {
                log::warn!(
                    "{}: build {} finished with {} of {expected} events given up (lost)",
                    lab.process,
                    build.id,
                    total.given_up
                );
            }
            Ingested::Finished {
                build: build.id,
                written: total.written,
                given_up: total.given_up,
            }
        }
        Err(e) => Ingested::Interrupted {
            build: build.id,
            reason: format!("finishing failed ({e}); it will be tried again"),
        },
    }
}
