//! runbuilds: the scheduler. It wakes on its poll interval, on SIGUSR1 (as
//! Toaster's runbuilds does) or on `POST /wake`, and:
//!
//! 1. releases the bookings of requests whose builds completed;
//! 2. fails builds whose lease ran out a whole lease ago (their ingester
//!    crashed and nobody took over), which frees their environments;
//! 3. unless draining, claims the oldest queued request it can satisfy, booking
//!    every environment it needs or none, with the claim strategy of
//!    `LAB_CLAIM` ([`schema::claim`]).
//!
//! [`Scheduler::run_once`] is one deterministic step; the daemon loop only calls
//! it, waits, and stops at shutdown.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use actix_web::{web, HttpResponse};
use anyhow::Context;
use clap::{Args, Parser};
use rand::Rng;
use schema::claim::{self, Claimed, Plan};
use schema::db::{LabConn, Pool};
use schema::error::OpError;
use schema::models::{Build, BuildRequest};
use schema::ops::{Lab, Op};
use schema::settings::{def, parse_duration, ClaimStrategy, Def, Source, Sourced};
use schema::types::{now_micros, RequestId, RequestState};

/// runbuilds: claims queued build requests and books their environments.
#[derive(Debug, Parser)]
#[command(
    name = "runbuilds",
    version,
    about = "locklab's scheduler daemon: claims queued build requests and books environments",
    long_about = "locklab's scheduler daemon, modelled on Yocto Toaster's runbuilds. It wakes on its \
poll interval, on SIGUSR1 or on POST /wake, releases finished builds' environments, expires dead \
leases and, unless draining, claims the oldest queued request it can satisfy with the claim \
strategy of LAB_CLAIM. Every flag can also be given as the environment variable shown; an empty \
variable counts as unset. Precedence: flag > LAB_* > WAL/TIMEOUT/ATOMIC_REQUESTS > preset > default."
)]
pub struct Config {
    #[command(flatten)]
    pub common: daemon::CommonArgs,
    #[command(flatten)]
    pub own: OwnArgs,
}

/// Settings of runbuilds alone.
#[derive(Debug, Clone, Args)]
pub struct OwnArgs {
    /// How often to look for queued requests when nothing wakes it sooner.
    #[arg(long, env = "LAB_POLL_INTERVAL", value_name = "DURATION")]
    pub poll_interval: Option<String>,
}

pub const OWN_IDS: &[(&str, Def)] = &[("poll_interval", def::POLL_INTERVAL)];

pub const DEFAULTS: daemon::Defaults = daemon::Defaults {
    name: "runbuilds",
    listen: "127.0.0.1:8001",
};

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Claimed(Claimed),
    /// A request no environments could ever satisfy, now failed.
    FailedUnsatisfiable(RequestId),
    Released(Vec<RequestId>),
    Expired(Vec<RequestId>),
    /// The claim lost a race or its environments went: nothing written.
    Lost(String),
    /// Requests wait for environments; as Toaster does, the oldest was saved
    /// back as queued (toaster and single strategies).
    Postponed(RequestId),
    /// A database operation gave up (already counted and logged).
    GaveUp,
    Idle,
}

/// Wakes the loop early (SIGUSR1, POST /wake).
#[derive(Debug, Default)]
pub struct Wake {
    woken: Mutex<bool>,
    cv: Condvar,
}

impl Wake {
    pub fn wake(&self) {
        *self.woken.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cv.notify_all();
    }

    /// Waits up to `timeout` or until woken.
    pub fn wait(&self, timeout: Duration) {
        let guard = self.woken.lock().unwrap_or_else(|p| p.into_inner());
        let (mut guard, _) = self
            .cv
            .wait_timeout_while(guard, timeout, |woken| !*woken)
            .unwrap_or_else(|p| p.into_inner());
        *guard = false;
    }
}

/// The scheduler's state.
pub struct Scheduler {
    pub lab: Lab,
    pub strategy: ClaimStrategy,
    pub lease: Duration,
}

fn gave_up_or_lost(e: OpError) -> Step {
    match e {
        OpError::Db(_) => Step::GaveUp,
        OpError::Aborted(reason) => Step::Lost(reason),
    }
}

impl Scheduler {
    fn lease_until(&self) -> i64 {
        now_micros() + i64::try_from(self.lease.as_micros()).unwrap_or(i64::MAX / 2)
    }

    /// One step: release, expire, then (unless draining) claim one request.
    pub fn run_once(&self, conn: &mut LabConn, draining: bool) -> Vec<Step> {
        let mut steps = Vec::new();
        if let Some(step) = self.release(conn) {
            steps.push(step);
        }
        if let Some(step) = self.expire(conn) {
            steps.push(step);
        }
        if !draining {
            steps.push(self.claim(conn));
        }
        steps
    }

    /// Releases the environments of requests whose builds all completed.
    pub fn release(&self, conn: &mut LabConn) -> Option<Step> {
        let candidates = match self
            .lab
            .op("find_releasable", |op| op.read(conn, claim::releasable))
        {
            Ok(c) => c,
            Err(e) => return Some(gave_up_or_lost(e)),
        };
        if candidates.is_empty() {
            return None;
        }
        let result = self.lab.op("release", |op| {
            op.write(conn, |tx| {
                let freed = claim::release(tx.conn(), &candidates)?;
                tx.wrote(freed);
                Ok(())
            })
        });
        Some(match result {
            Ok(()) => {
                log::debug!("{}: released requests {:?}", self.lab.process, candidates);
                Step::Released(candidates)
            }
            Err(e) => gave_up_or_lost(e),
        })
    }

    /// Fails builds whose lease ran out more than a lease ago, so their
    /// environments are released on the next step.
    pub fn expire(&self, conn: &mut LabConn) -> Option<Step> {
        let lease_us = i64::try_from(self.lease.as_micros()).unwrap_or(i64::MAX / 2);
        let cutoff = now_micros() - lease_us;
        let stale = match self.lab.op("find_expired", |op| {
            op.read(conn, |c| {
                Ok(Build::unfinished(c)?
                    .into_iter()
                    .filter(|b| b.lease_until.is_some_and(|l| l < cutoff))
                    .count())
            })
        }) {
            Ok(n) => n,
            Err(e) => return Some(gave_up_or_lost(e)),
        };
        if stale == 0 {
            return None;
        }
        let result = self.lab.op("expire", |op| {
            op.write(conn, |tx| {
                let requests = Build::expire(tx.conn(), cutoff)?;
                tx.wrote(requests.len());
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
                Ok(requests)
            })
        });
        Some(match result {
            Ok(requests) => {
                if !requests.is_empty() {
                    log::warn!(
                        "{}: lease expired for requests {:?}: their ingester stopped renewing; failed them",
                        self.lab.process,
                        requests
                    );
                }
                Step::Expired(requests)
            }
            Err(e) => gave_up_or_lost(e),
        })
    }

    /// Claims one request with this scheduler's strategy.
    pub fn claim(&self, conn: &mut LabConn) -> Step {
        let result = self.lab.op("claim", |op| match self.strategy {
            ClaimStrategy::Single => op.write(conn, |tx| {
                let plan = claim::read_phase(tx.conn())?;
                self.write_plan(tx, plan)
            }),
            ClaimStrategy::Toaster | ClaimStrategy::Guarded => {
                let plan = self.read(op, conn)?;
                if self.needs_no_write(&plan) {
                    return Ok(Step::Idle);
                }
                op.write(conn, |tx| self.write_plan(tx, plan.clone()))
            }
        });
        match result {
            Ok(step) => {
                if let Step::Claimed(c) = &step {
                    log::debug!(
                        "{}: claimed request {} as build {}",
                        self.lab.process,
                        c.request,
                        c.build
                    );
                }
                step
            }
            Err(e) => gave_up_or_lost(e),
        }
    }

    /// The read phase of a claim, in the strategy's own shape: a transaction of
    /// its own (toaster) or no transaction at all (guarded). For `single` the
    /// read belongs to the write's transaction: see [`SplitClaim`].
    pub fn read(&self, op: &mut Op<'_>, conn: &mut LabConn) -> Result<Plan, OpError> {
        if claim::reads_in_own_transaction(self.strategy) {
            op.write(conn, |tx| Ok(claim::read_phase(tx.conn())?))
        } else {
            op.read(conn, claim::read_phase)
        }
    }

    /// Whether a plan leads to no write at all with this strategy.
    fn needs_no_write(&self, plan: &Plan) -> bool {
        match plan {
            Plan::Idle { .. } => true,
            Plan::Postpone { .. } => self.strategy == ClaimStrategy::Guarded,
            _ => false,
        }
    }

    /// The write phase, inside the caller's transaction.
    pub fn write_plan(
        &self,
        tx: &mut schema::db::Tx<'_>,
        plan: Plan,
    ) -> Result<Step, schema::TxError> {
        match plan {
            Plan::Idle { .. } => Ok(Step::Idle),
            Plan::Postpone { request, needs, .. } => match self.strategy {
                ClaimStrategy::Guarded => Ok(Step::Idle),
                ClaimStrategy::Toaster | ClaimStrategy::Single => {
                    let n = claim::postpone(tx.conn(), request, &needs)?;
                    tx.wrote(n);
                    Ok(Step::Postponed(request))
                }
            },
            Plan::Unsatisfiable { request, reason } => {
                let n = BuildRequest::transition(
                    tx.conn(),
                    request,
                    RequestState::Queued,
                    RequestState::Failed,
                    Some(&format!("unsatisfiable: {reason}")),
                )?;
                tx.wrote(n);
                if n == 1 {
                    log::warn!(
                        "{}: request {request} can never run ({reason}); failed it",
                        self.lab.process
                    );
                }
                Ok(Step::FailedUnsatisfiable(request))
            }
            Plan::Claim {
                request,
                needs,
                environments,
            } => {
                let seed: i64 = rand::rng().random_range(0..i64::MAX);
                let lease_until = self.lease_until();
                let claimed = match self.strategy {
                    ClaimStrategy::Toaster | ClaimStrategy::Single => claim::write_as_read(
                        tx.conn(),
                        request,
                        &needs,
                        &self.lab.process,
                        seed,
                        lease_until,
                    )?,
                    ClaimStrategy::Guarded => claim::write_guarded(
                        tx.conn(),
                        request,
                        &environments,
                        &self.lab.process,
                        seed,
                        lease_until,
                    )?,
                };
                // environments locked + bookings + request + build
                tx.wrote(2 * claimed.environments.len() + 2);
                Ok(Step::Claimed(claimed))
            }
        }
    }
}

/// A claim whose read and write phases run as separate calls, so that a test
/// can interleave two schedulers: A.read, B.read, A.write, B.write. The
/// transaction boundaries are the strategy's: toaster commits after the read,
/// single keeps one transaction open from read to write, guarded reads outside
/// any transaction.
pub struct SplitClaim<'a> {
    pub scheduler: &'a Scheduler,
}

impl SplitClaim<'_> {
    pub fn read(&self, conn: &mut LabConn) -> Result<Plan, OpError> {
        let s = self.scheduler;
        match s.strategy {
            ClaimStrategy::Single => {
                conn.begin()?;
                claim::read_phase(conn.diesel()).map_err(|e| {
                    let err = conn.classify(schema::error::Phase::Body, &e);
                    conn.rollback();
                    OpError::Db(err)
                })
            }
            _ => s.lab.op("claim_read", |op| s.read(op, conn)),
        }
    }

    pub fn write(&self, conn: &mut LabConn, plan: Plan) -> Result<Step, OpError> {
        let s = self.scheduler;
        match s.strategy {
            ClaimStrategy::Single => {
                // The body runs inside the transaction `read` left open.
                let result = conn.autocommit(&mut |tx| s.write_plan(tx, plan.clone()));
                match result {
                    Ok((step, _, _)) => {
                        conn.commit()?;
                        Ok(step)
                    }
                    Err(e) => {
                        conn.rollback();
                        Err(match e.error {
                            schema::db::AttemptFailure::Db(d) => OpError::Db(d),
                            schema::db::AttemptFailure::Aborted(r) => OpError::Aborted(r),
                        })
                    }
                }
            }
            _ => s.lab.op("claim_write", |op| {
                op.write(conn, |tx| s.write_plan(tx, plan.clone()))
            }),
        }
    }
}

/// Resolves runbuilds' own settings.
pub fn poll_interval(matches: &clap::ArgMatches) -> anyhow::Result<Sourced<Duration>> {
    let flags = daemon::flags_from_matches(matches, OWN_IDS);
    let r = schema::settings::Resolver::new(&flags, &schema::settings::process_env);
    let v = r.get(
        def::POLL_INTERVAL,
        parse_duration,
        None,
        None,
        Duration::from_secs(1),
    )?;
    if v.value.is_zero() {
        anyhow::bail!("{}: the poll interval must be above 0", v.source);
    }
    Ok(v)
}

/// Runs the daemon until SIGTERM/SIGINT.
pub async fn run(d: daemon::Daemon, poll: Sourced<Duration>) -> anyhow::Result<()> {
    let name = d.name().to_string();
    log::info!(
        "{name}: setting poll_interval={} source={}",
        schema::settings::fmt_duration(poll.value),
        poll.source
    );
    if poll.source == Source::Default {
        log::debug!("{name}: wake it sooner with SIGUSR1 or POST /wake");
    }
    let d = Arc::new(d);
    let wake = Arc::new(Wake::default());
    let scheduler = Scheduler {
        lab: d.lab.clone(),
        strategy: d.settings.knobs.claim.value,
        lease: d.settings.lease.value,
    };
    let pool: Pool = d.pool.clone();
    let worker_daemon = d.clone();
    let worker_wake = wake.clone();
    let worker = daemon::Worker {
        name: "scheduler",
        run: Box::new(move || {
            scheduler_loop(&scheduler, &pool, &worker_daemon, &worker_wake, poll.value)
        }),
    };
    let sig_wake = wake.clone();
    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        .context("installing the SIGUSR1 handler")?;
    tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            sig_wake.wake();
        }
    });
    let route_wake = web::Data::from(wake.clone());
    let stop_wake = wake.clone();
    let result = daemon::serve(
        d,
        move |cfg| {
            cfg.app_data(route_wake.clone())
                .route("/wake", web::post().to(wake_route));
        },
        1,
        vec![worker],
        move || stop_wake.wake(),
    )
    .await;
    result
}

async fn wake_route(wake: web::Data<Wake>) -> HttpResponse {
    wake.wake();
    HttpResponse::Ok().json(serde_json::json!({ "woken": true }))
}

fn scheduler_loop(
    s: &Scheduler,
    pool: &Pool,
    d: &daemon::Daemon,
    wake: &Wake,
    poll: Duration,
) -> anyhow::Result<()> {
    let mut conn = pool.get().context("getting a connection")?;
    while !s.lab.is_stopping() {
        let steps = s.run_once(&mut conn, d.is_draining());
        let busy = steps.iter().any(|st| {
            match st {
                Step::Claimed(_) | Step::Released(_) | Step::FailedUnsatisfiable(_) => true,
                // an expiry frees environments at the next step: go on at once
                Step::Expired(requests) => !requests.is_empty(),
                _ => false,
            }
        });
        if !busy {
            wake.wait(poll);
        }
    }
    Ok(())
}
