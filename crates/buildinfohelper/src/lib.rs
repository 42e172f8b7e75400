//! buildinfohelper: the ingester. It takes inprogress builds that have no live
//! owner, under a lease, and writes each build's event stream (deterministic
//! from the build's seed, `LAB_EVENTS_PER_BUILD` rows) with the commit policy
//! of `LAB_COMMIT` ([`schema::strategy::commit`], which owns every
//! transaction):
//!
//! - `per-event`: every event autocommits;
//! - `every-3-tasks`: Toaster's buildinfohelper in Django's manual mode;
//! - `batch:N`: one transaction per N events.
//!
//! A write that finally fails (retry `none`, or retries exhausted) is skipped and
//! counted as given up: the event is lost, as in Toaster, and `check` reports
//! it. A restart resumes at max(seq) + 1. At the end it sets the build's outcome
//! and the request's final state (the third writer on build_request), frees the
//! request's environments and wakes runbuilds.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser};
use schema::db::{LabConn, Pool};
use schema::models::{Build, Environment};
use schema::ops::{sleep_unless_stopping, Lab};
use schema::settings::{def, fmt_duration, CommitPolicy, Def, Resolver, Sourced};
use schema::strategy::commit::{self, Commit, IngestCtx};
use schema::types::{now_micros, BuildId};

pub use schema::strategy::commit::Ingested;

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
    /// Pause between events (the argument of the original external-load script;
    /// the toaster preset paces a 15,000-event build to about a minute).
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
        let event_delay = r.event_delay()?;
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

impl From<Ingested> for Step {
    fn from(i: Ingested) -> Step {
        match i {
            Ingested::Finished {
                build,
                written,
                given_up,
            } => Step::Finished {
                build,
                written,
                given_up,
            },
            Ingested::Interrupted { build, reason } => Step::Interrupted { build, reason },
        }
    }
}

const NOTHING_TO_TAKE: &str = "no build to take";

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

    /// Takes one unowned build and ingests it to its end (or until stopped),
    /// waking runbuilds with `notify` where the policy does.
    pub fn run_once(&self, conn: &mut LabConn, notify: &(dyn Fn() + Sync)) -> Step {
        let owner = self.lab.process.clone();
        let expected = i32::try_from(self.events_per_build).unwrap_or(i32::MAX);
        let taken = self.lab.op("take", |op| {
            op.autocommit(conn, |tx| {
                let Some(id) = Build::next_unowned(tx.conn(), &owner)? else {
                    // Nothing to take: not an ok operation.
                    return Err(schema::TxError::abort(NOTHING_TO_TAKE));
                };
                let mut build = None;
                if tx.counted(|c| {
                    build = Build::take(c, id, &owner, self.lease_until())?;
                    Ok(usize::from(build.is_some()))
                })? == 0
                {
                    return Ok(None);
                }
                tx.counted(|c| Build::set_events_expected(c, id, expected))?;
                if let Some(r) = build.as_ref().and_then(|b| b.request_id) {
                    tx.counted(|c| Environment::renew_for_request(c, r, self.lease_until()))?;
                }
                Ok(Build::get(tx.conn(), id)?)
            })
        });
        let build = match taken {
            Ok(Some(b)) => b,
            Ok(None) => return Step::Idle,
            Err(schema::OpError::Aborted(r)) if r == NOTHING_TO_TAKE => return Step::Idle,
            Err(_) => return Step::GaveUp,
        };
        let ctx = IngestCtx {
            lab: &self.lab,
            lease: self.lease,
            event_delay: self.event_delay,
            notify,
        };
        let mut policy: Box<dyn Commit + Send> = commit::policy(self.commit);
        commit::ingest(&ctx, conn, build, policy.as_mut()).into()
    }
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
    let wd = d.clone();
    let worker = daemon::Worker {
        name: "ingester",
        run: Box::new(move || {
            ingest_loop(&ingester, &pool, &|| {
                wd.notify_runbuilds(daemon::WakeWhy::BuildEnded)
            })
        }),
    };
    daemon::serve(d, |_cfg| {}, 1, vec![worker], || {}).await
}

fn ingest_loop(ing: &Ingester, pool: &Pool, notify: &(dyn Fn() + Sync)) -> anyhow::Result<()> {
    let mut conn = pool.get().context("getting a connection")?;
    while !ing.lab.is_stopping() {
        match ing.run_once(&mut conn, notify) {
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
