//! buildinfohelper: the ingester. It takes inprogress builds that have no live
//! owner, under a lease, and writes each build's event stream (deterministic
//! from the build's seed, `LAB_EVENTS_PER_BUILD` rows) with the commit policy
//! of `LAB_COMMIT`:
//!
//! - `per-event`: every event autocommits;
//! - `every-3-tasks`: one transaction per three tasks, as Toaster does;
//! - `batch:N`: one transaction per N events.
//!
//! A write that finally fails (retry `none`, or retries exhausted) is skipped and
//! counted as given up: the event is lost, as in Toaster, and `check` reports
//! it. A restart resumes at max(seq) + 1. At the end it sets the build's outcome
//! and the request's final state: the third writer on build_request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser};
use schema::db::{LabConn, Pool};
use schema::error::OpError;
use schema::models::{Build, BuildEvent, BuildRequest, Environment};
use schema::ops::{sleep_unless_stopping, Lab};
use schema::settings::{def, fmt_duration, parse_duration, CommitPolicy, Def, Resolver, Sourced};
use schema::stream::{Generator, StreamEvent};
use schema::types::{now_micros, BuildId, Outcome, RequestState};

/// buildinfohelper: writes each build's event stream.
#[derive(Debug, Parser)]
#[command(
    name = "buildinfohelper",
    version,
    about = "locklab's ingester daemon: writes each build's event stream under a lease",
    long_about = "locklab's ingester daemon, modelled on Yocto Toaster's buildinfohelper. It takes \
inprogress builds with no live owner under a lease, writes each build's deterministic event \
stream (about 15,000 rows by default) with the commit policy of LAB_COMMIT, and sets the \
build's outcome and the request's final state. A write that finally fails is skipped and \
counted as given up, as Toaster silently loses it. Every flag can also be given as the \
environment variable shown; an empty variable counts as unset."
)]
pub struct Config {
    #[command(flatten)]
    pub common: daemon::CommonArgs,
    #[command(flatten)]
    pub own: OwnArgs,
}

/// Settings of buildinfohelper alone.
#[derive(Debug, Clone, Args)]
pub struct OwnArgs {
    /// Events in each build's stream.
    #[arg(long, env = "LAB_EVENTS_PER_BUILD", value_name = "N")]
    pub events_per_build: Option<String>,
    /// Pause between events (the argument of the original external-load script).
    #[arg(long, env = "LAB_EVENT_DELAY", value_name = "DURATION")]
    pub event_delay: Option<String>,
}

pub const OWN_IDS: &[(&str, Def)] = &[
    ("events_per_build", def::EVENTS_PER_BUILD),
    ("event_delay", def::EVENT_DELAY),
];

pub const DEFAULTS: daemon::Defaults = daemon::Defaults {
    name: "buildinfohelper",
    listen: "127.0.0.1:8002",
};

/// How long an idle ingester waits before looking for work again.
const IDLE_POLL: Duration = Duration::from_millis(200);

/// The ingester's own settings.
#[derive(Debug, Clone)]
pub struct Own {
    pub events_per_build: Sourced<u32>,
    pub event_delay: Sourced<Duration>,
}

impl Own {
    pub fn resolve(matches: &clap::ArgMatches) -> anyhow::Result<Own> {
        let flags = daemon::flags_from_matches(matches, OWN_IDS);
        let r = Resolver::new(&flags, &schema::settings::process_env);
        let events_per_build = r.get(
            def::EVENTS_PER_BUILD,
            |s| {
                s.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=10_000_000).contains(n))
                    .ok_or_else(|| format!("{s:?} is not a count of events between 1 and 10000000"))
            },
            None,
            None,
            15_000,
        )?;
        let event_delay = r.get(def::EVENT_DELAY, parse_duration, None, None, Duration::ZERO)?;
        Ok(Own {
            events_per_build,
            event_delay,
        })
    }
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A build was ingested to its end and finished.
    Finished {
        build: BuildId,
        written: u32,
        given_up: u32,
    },
    /// Stopped before the end (shutdown, lost lease, cancelled).
    Interrupted { build: BuildId, reason: String },
    /// No unowned build to take.
    Idle,
    /// Taking a build gave up (counted and logged).
    GaveUp,
}

/// The ingester.
pub struct Ingester {
    pub lab: Lab,
    pub commit: CommitPolicy,
    pub events_per_build: u32,
    pub event_delay: Duration,
    pub lease: Duration,
}

impl Ingester {
    fn lease_until(&self) -> i64 {
        now_micros() + i64::try_from(self.lease.as_micros()).unwrap_or(i64::MAX / 2)
    }

    /// Takes one unowned build and ingests it to its end (or until stopped).
    pub fn run_once(&self, conn: &mut LabConn) -> Step {
        let owner = self.lab.process.clone();
        let expected = i32::try_from(self.events_per_build).unwrap_or(i32::MAX);
        let taken = self.lab.op("take", |op| {
            op.autocommit(conn, |tx| {
                let Some(id) = Build::next_unowned(tx.conn(), &owner)? else {
                    return Ok(None);
                };
                let Some(build) = Build::take(tx.conn(), id, &owner, self.lease_until())? else {
                    return Ok(None);
                };
                tx.wrote(1);
                tx.counted(|c| Build::set_events_expected(c, id, expected))?;
                tx.counted(|c| {
                    Environment::renew_for_request(c, build.request_id, self.lease_until())
                })?;
                Ok(Build::get(tx.conn(), id)?)
            })
        });
        let build = match taken {
            Ok(Some(b)) => b,
            Ok(None) => return Step::Idle,
            Err(_) => return Step::GaveUp,
        };
        self.ingest(conn, build)
    }

    fn ingest(&self, conn: &mut LabConn, build: Build) -> Step {
        let owner = self.lab.process.clone();
        let expected = u32::try_from(build.events_expected.unwrap_or(0)).unwrap_or(0);
        let resume = match self.lab.op("resume", |op| {
            op.read(conn, |c| BuildEvent::max_seq(c, build.id))
        }) {
            Ok(max) => max.map(|m| u32::try_from(m + 1).unwrap_or(0)).unwrap_or(0),
            Err(_) => {
                return Step::Interrupted {
                    build: build.id,
                    reason: "could not read where to resume".to_string(),
                }
            }
        };
        if resume > 0 {
            log::info!(
                "{}: resuming build {} at seq {resume} of {expected}",
                self.lab.process,
                build.id
            );
        }
        let mut written = 0u32;
        let mut given_up = 0u32;
        let (mut unsaved_written, mut unsaved_given_up) = (0i32, 0i32);
        let renew_every = (self.lease / 3).max(Duration::from_millis(30));
        let mut last_renew = Instant::now();
        let mut stream = Generator::new(build.seed)
            .skip(resume as usize)
            .take(expected.saturating_sub(resume) as usize)
            .peekable();
        let mut unit: Vec<StreamEvent> = Vec::new();
        let mut tasks_in_unit = 0;
        while let Some(event) = stream.next() {
            if self.lab.is_stopping() {
                return Step::Interrupted {
                    build: build.id,
                    reason: "shutting down".to_string(),
                };
            }
            if !self.event_delay.is_zero() {
                sleep_unless_stopping(self.event_delay, &self.lab.stopping);
            }
            if event.kind.ends_task() {
                tasks_in_unit += 1;
            }
            unit.push(event);
            let full = match self.commit {
                CommitPolicy::PerEvent => true,
                CommitPolicy::Every3Tasks => tasks_in_unit >= 3,
                CommitPolicy::Batch(n) => unit.len() >= n as usize,
            } || stream.peek().is_none();
            if !full {
                continue;
            }
            let n = u32::try_from(unit.len()).unwrap_or(u32::MAX);
            match self.write_unit(conn, build.id, &unit) {
                Ok(()) => {
                    written += n;
                    unsaved_written += n as i32;
                }
                Err(_) => {
                    given_up += n;
                    unsaved_given_up += n as i32;
                }
            }
            unit.clear();
            tasks_in_unit = 0;
            if last_renew.elapsed() >= renew_every {
                last_renew = Instant::now();
                match self.renew(conn, &build, unsaved_written, unsaved_given_up) {
                    Ok(Renewal::Kept) => {
                        unsaved_written = 0;
                        unsaved_given_up = 0;
                    }
                    Ok(Renewal::Lost) => {
                        log::warn!(
                            "{}: lost the lease of build {} (another ingester took it); stopping it",
                            self.lab.process,
                            build.id
                        );
                        return Step::Interrupted {
                            build: build.id,
                            reason: "lease lost".to_string(),
                        };
                    }
                    Ok(Renewal::Cancelled) => {
                        let _ = self.finish(conn, &build, &owner, Outcome::Failed, 0, 0);
                        return Step::Interrupted {
                            build: build.id,
                            reason: "cancelled".to_string(),
                        };
                    }
                    Err(_) => {} // counted and logged; try again at the next renewal
                }
            }
        }
        match self.finish(
            conn,
            &build,
            &owner,
            Outcome::Succeeded,
            unsaved_written,
            unsaved_given_up,
        ) {
            Ok(()) => {
                if given_up > 0 {
                    log::warn!(
                        "{}: build {} finished with {given_up} of {expected} events given up (lost)",
                        self.lab.process,
                        build.id
                    );
                }
                Step::Finished {
                    build: build.id,
                    written,
                    given_up,
                }
            }
            Err(_) => Step::Interrupted {
                build: build.id,
                reason: "finishing gave up; it will be retried".to_string(),
            },
        }
    }

    /// Writes one commit unit: an autocommit insert per event, or one transaction.
    fn write_unit(
        &self,
        conn: &mut LabConn,
        build: BuildId,
        unit: &[StreamEvent],
    ) -> Result<(), OpError> {
        let name = match self.commit {
            CommitPolicy::PerEvent => "write_event",
            _ => "write_batch",
        };
        self.lab.op(name, |op| {
            let body = |tx: &mut schema::db::Tx<'_>| {
                let n = BuildEvent::insert(tx.conn(), build, unit)?;
                tx.wrote(n);
                Ok(())
            };
            match self.commit {
                CommitPolicy::PerEvent => op.autocommit(conn, body),
                _ => op.write(conn, body),
            }
        })
    }

    fn renew(
        &self,
        conn: &mut LabConn,
        build: &Build,
        written: i32,
        given_up: i32,
    ) -> Result<Renewal, OpError> {
        let owner = &self.lab.process;
        self.lab.op("renew", |op| {
            op.write(conn, |tx| {
                let lease_until = self.lease_until();
                if Build::renew(tx.conn(), build.id, owner, lease_until)? == 0 {
                    return Ok(Renewal::Lost);
                }
                tx.wrote(1);
                if written != 0 || given_up != 0 {
                    tx.counted(|c| Build::add_progress(c, build.id, written, given_up))?;
                }
                tx.counted(|c| Environment::renew_for_request(c, build.request_id, lease_until))?;
                let state = BuildRequest::get(tx.conn(), build.request_id)?.map(|r| r.state);
                Ok(if state == Some(RequestState::Cancelling) {
                    Renewal::Cancelled
                } else {
                    Renewal::Kept
                })
            })
        })
    }

    fn finish(
        &self,
        conn: &mut LabConn,
        build: &Build,
        owner: &str,
        outcome: Outcome,
        written: i32,
        given_up: i32,
    ) -> Result<(), OpError> {
        self.lab.op("finish", |op| {
            op.write(conn, |tx| {
                if Build::finish(tx.conn(), build.id, owner, outcome)? == 0 {
                    return Err(schema::TxError::abort("the build is no longer ours"));
                }
                tx.wrote(1);
                tx.counted(|c| Build::add_progress(c, build.id, written, given_up))?;
                let r = build.request_id;
                let n = match outcome {
                    Outcome::Succeeded => {
                        BuildRequest::transition(
                            tx.conn(),
                            r,
                            RequestState::InProgress,
                            RequestState::Completed,
                            None,
                        )? + BuildRequest::transition(
                            tx.conn(),
                            r,
                            RequestState::Cancelling,
                            RequestState::Failed,
                            Some("cancelled"),
                        )?
                    }
                    Outcome::Failed => {
                        BuildRequest::transition(
                            tx.conn(),
                            r,
                            RequestState::InProgress,
                            RequestState::Failed,
                            None,
                        )? + BuildRequest::transition(
                            tx.conn(),
                            r,
                            RequestState::Cancelling,
                            RequestState::Failed,
                            Some("cancelled"),
                        )?
                    }
                };
                tx.wrote(n);
                Ok(())
            })
        })
    }
}

enum Renewal {
    Kept,
    Lost,
    Cancelled,
}

/// Runs the daemon until SIGTERM/SIGINT. While draining it keeps taking
/// unowned builds and finishing them.
pub async fn run(d: daemon::Daemon, own: Own) -> anyhow::Result<()> {
    let name = d.name().to_string();
    log::info!(
        "{name}: setting events_per_build={} source={}",
        own.events_per_build.value,
        own.events_per_build.source
    );
    log::info!(
        "{name}: setting event_delay={} source={}",
        fmt_duration(own.event_delay.value),
        own.event_delay.source
    );
    let d = Arc::new(d);
    let ingester = Ingester {
        lab: d.lab.clone(),
        commit: d.settings.knobs.commit.value,
        events_per_build: own.events_per_build.value,
        event_delay: own.event_delay.value,
        lease: d.settings.lease.value,
    };
    let pool: Pool = d.pool.clone();
    let worker = daemon::Worker {
        name: "ingester",
        run: Box::new(move || ingest_loop(&ingester, &pool)),
    };
    daemon::serve(d, |_cfg| {}, 1, vec![worker], || {}).await
}

fn ingest_loop(ing: &Ingester, pool: &Pool) -> anyhow::Result<()> {
    let mut conn = pool.get().context("getting a connection")?;
    while !ing.lab.is_stopping() {
        match ing.run_once(&mut conn) {
            Step::Finished {
                build,
                written,
                given_up,
            } => {
                log::info!(
                    "{}: finished build {build}: {written} events written, {given_up} given up",
                    ing.lab.process
                );
            }
            Step::Interrupted { build, reason } => {
                log::info!("{}: left build {build}: {reason}", ing.lab.process);
            }
            Step::Idle | Step::GaveUp => sleep_unless_stopping(IDLE_POLL, &ing.lab.stopping),
        }
    }
    Ok(())
}
