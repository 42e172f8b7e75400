//! runbuilds: the scheduler. Each pass it cleans up (frees what finished or
//! died) and, unless draining, claims one request with the claim strategy of
//! `LAB_CLAIM` ([`schema::strategy::claim`]), which owns every transaction.
//!
//! What makes it run a pass is `LAB_WAKE`:
//! - `poll`: every poll interval, at once again after a pass that did work,
//!   and when woken (SIGUSR1, `POST /wake`): buildinfohelper wakes it at the
//!   end of each build, which frees environments;
//! - `notify`: only when woken, as Toaster's runbuilds (webui wakes it after
//!   each create, buildinfohelper at the end of each build). One wake runs the
//!   pass `LAB_WAKE_PASSES` times (7 by default: Toaster's loop runs once per
//!   field of the `struct_siginfo` that `sigtimedwait` returns). Otherwise,
//!   every 5 s, it only checks for dead builds. Wakes that arrive during a
//!   pass are kept (one pending wake), not lost: Toaster most likely loses
//!   them to its no-op handler, which is not verified.
//!
//! It writes its PID and PID namespace to its pidfile (after installing the
//! SIGUSR1 handler), so that webui and buildinfohelper can signal it.
//!
//! [`Scheduler::run_once`] is one deterministic pass; the daemon loop only
//! calls it, waits, and stops at shutdown.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};
use anyhow::Context;
use clap::{Args, Parser};
use schema::db::{LabConn, Pool};
use schema::settings::{def, parse_duration, Def, Source, Sourced, WakeMode};
use schema::strategy::claim::{self, Claim, ClaimCtx};

pub use schema::strategy::claim::{Claimed, Plan, Step};

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
    /// Passes per wake-up under LAB_WAKE=notify (default 7, Toaster's quirk).
    #[arg(long, env = "LAB_WAKE_PASSES", value_name = "N")]
    pub wake_passes: Option<String>,
}

pub const OWN_IDS: &[(&str, Def)] = &[
    ("poll_interval", def::POLL_INTERVAL),
    ("wake_passes", def::WAKE_PASSES),
];

/// How often an un-notified scheduler checks for dead builds under `notify`
/// (Toaster's `sigtimedwait` timeout).
pub const DEAD_CHECK: Duration = Duration::from_secs(5);

pub const DEFAULTS: daemon::Defaults = daemon::Defaults {
    name: "runbuilds",
    listen: "127.0.0.1:8001",
};

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

    /// Waits up to `timeout` or until woken; true if woken. A wake that came
    /// while nobody waited is kept for the next wait.
    pub fn wait(&self, timeout: Duration) -> bool {
        let guard = self.woken.lock().unwrap_or_else(|p| p.into_inner());
        let (mut guard, _) = self
            .cv
            .wait_timeout_while(guard, timeout, |woken| !*woken)
            .unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *guard, false)
    }
}

/// The scheduler: a claim strategy and its context.
pub struct Scheduler {
    pub ctx: ClaimCtx,
    pub strategy: &'static dyn Claim,
    /// `LAB_POLL_TXN`: poll inside one long-lived transaction, committed only
    /// after a pass that wrote (pre-1.6 Django's transaction management, and
    /// the source document's pollers).
    pub poll_txn: bool,
    /// When the open poll transaction began (0: none open).
    poll_started_us: std::sync::atomic::AtomicI64,
}

impl Scheduler {
    pub fn new(
        lab: schema::Lab,
        strategy: schema::settings::ClaimStrategy,
        lease: Duration,
    ) -> Scheduler {
        Scheduler {
            ctx: ClaimCtx { lab, lease },
            strategy: claim::strategy(strategy),
            poll_txn: false,
            poll_started_us: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// Polls inside one long-lived transaction (`LAB_POLL_TXN`).
    pub fn with_poll_txn(mut self, poll_txn: bool) -> Scheduler {
        self.poll_txn = poll_txn;
        self
    }

    /// One pass: clean up, check for dead builds, then (unless draining) claim
    /// one request. Under `LAB_POLL_TXN` the pass runs inside the poll
    /// transaction: begun by the first pass, its reads see that
    /// transaction's snapshot (under repeatable read: the one taken by its
    /// first read), its writes are savepoints, and it commits only after a
    /// pass that wrote. A draining scheduler ends it first.
    pub fn run_once(&self, conn: &mut LabConn, draining: bool) -> Vec<Step> {
        if !self.poll_txn || draining {
            self.end_poll_txn(conn);
            return self.pass(conn, draining);
        }
        use std::sync::atomic::Ordering;
        if !conn.in_transaction() {
            if let Err(e) = conn.begin() {
                log::warn!("{}: beginning the poll transaction: {e}", self.ctx.name());
                return vec![Step::GaveUp];
            }
            self.poll_started_us
                .store(schema::types::now_micros(), Ordering::Relaxed);
        }
        self.observe_poll(conn);
        let steps = self.pass(conn, draining);
        if conn.in_transaction() && conn.pending_rows() > 0 {
            let _ = self.ctx.lab.op("poll_commit", |op| op.commit_open(conn));
        }
        if !conn.in_transaction() {
            self.poll_started_us.store(0, Ordering::Relaxed);
        }
        steps
    }

    /// Ends an open poll transaction (nothing of it is pending: a pass that
    /// wrote committed).
    pub fn end_poll_txn(&self, conn: &mut LabConn) {
        if self.poll_txn && conn.in_transaction() {
            conn.rollback();
            self.poll_started_us
                .store(0, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Traces what the poll sees inside its transaction: the queue, the
    /// newest request and the free environments.
    fn observe_poll(&self, conn: &mut LabConn) {
        let Some(trace) = self.ctx.lab.trace.as_ref() else {
            return;
        };
        let started = self
            .poll_started_us
            .load(std::sync::atomic::Ordering::Relaxed);
        let seen = claim::poll_seen(conn.diesel(), started);
        match seen {
            Ok(seen) => trace.record_poll("poll", schema::types::now_micros(), conn.txn_id(), seen),
            Err(e) => log::debug!("{}: observing the poll: {e}", self.ctx.name()),
        }
    }

    fn pass(&self, conn: &mut LabConn, draining: bool) -> Vec<Step> {
        let mut steps = self.strategy.cleanup(&self.ctx, conn);
        steps.extend(self.strategy.check_dead(&self.ctx, conn));
        if !draining {
            steps.push(self.strategy.claim(&self.ctx, conn));
        }
        steps
    }

    /// One claim with the strategy.
    pub fn claim(&self, conn: &mut LabConn) -> Step {
        self.strategy.claim(&self.ctx, conn)
    }

    /// The read phase alone (tests interleave two schedulers).
    pub fn read(&self, conn: &mut LabConn) -> Result<Plan, schema::OpError> {
        self.strategy.read(&self.ctx, conn)
    }

    /// The write phase for a plan.
    pub fn write(&self, conn: &mut LabConn, plan: Plan) -> Result<Step, schema::OpError> {
        self.strategy.write(&self.ctx, conn, plan)
    }

    pub fn lab(&self) -> &schema::Lab {
        &self.ctx.lab
    }
}

/// runbuilds' own settings, resolved.
#[derive(Debug, Clone)]
pub struct Own {
    pub poll_interval: Sourced<Duration>,
    pub wake_passes: Sourced<u32>,
}

/// Resolves runbuilds' own settings.
pub fn own_settings(matches: &clap::ArgMatches, wake: WakeMode) -> anyhow::Result<Own> {
    let flags = daemon::flags_from_matches(matches, OWN_IDS);
    let r = schema::settings::Resolver::new(&flags, &schema::settings::process_env);
    let poll_interval = r.get(
        def::POLL_INTERVAL,
        parse_duration,
        None,
        None,
        Duration::from_secs(1),
    )?;
    if poll_interval.value.is_zero() {
        anyhow::bail!(
            "{}: the poll interval must be above 0",
            poll_interval.source
        );
    }
    Ok(Own {
        poll_interval,
        wake_passes: r.wake_passes(wake)?,
    })
}

/// Runs the daemon until SIGTERM/SIGINT.
pub async fn run(d: daemon::Daemon, own: Own) -> anyhow::Result<()> {
    let name = d.name().to_string();
    let wake_mode = d.settings.knobs.wake.value;
    log::info!(
        "{name}: setting poll_interval={} source={}",
        schema::settings::fmt_duration(own.poll_interval.value),
        own.poll_interval.source
    );
    log::info!(
        "{name}: setting wake_passes={} source={}",
        own.wake_passes.value,
        own.wake_passes.source
    );
    if own.poll_interval.source == Source::Default && wake_mode == WakeMode::Poll {
        log::debug!("{name}: wake it sooner with SIGUSR1 or POST /wake");
    }
    let d = Arc::new(d);
    let wake = Arc::new(Wake::default());
    let scheduler = Scheduler::new(
        d.lab.clone(),
        d.settings.knobs.claim.value,
        d.settings.lease.value,
    )
    .with_poll_txn(d.settings.knobs.poll_txn.value);
    if scheduler.poll_txn
        && d.settings.knobs.isolation.value != schema::settings::Isolation::ReadCommitted
        && d.settings.database.value.kind() != schema::backend::Kind::Sqlite
    {
        log::warn!(
            "{name}: warning: polling inside one transaction under {} isolation: the poll's \
             snapshot does not move until it writes, so it can leave requests queued while \
             environments are free (LAB_ISOLATION=read-committed, or LAB_POLL_TXN=false, cures it)",
            d.settings.knobs.isolation.value
        );
    }
    // The handler first, then the pidfile: a SIGUSR1 before the handler
    // would kill the process.
    let sig_wake = wake.clone();
    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        .context("installing the SIGUSR1 handler")?;
    tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            sig_wake.wake();
        }
    });
    let pidfile = d.settings.pidfile_for(&name);
    daemon::wake::write_pidfile(&pidfile)
        .with_context(|| format!("writing the pidfile {}", pidfile.display()))?;
    log::info!("{name}: pidfile {}", pidfile.display());
    let pool: Pool = d.pool.clone();
    let worker_daemon = d.clone();
    let worker_wake = wake.clone();
    let worker = daemon::Worker {
        name: "scheduler",
        run: Box::new(move || {
            scheduler_loop(
                &scheduler,
                &pool,
                &worker_daemon,
                &worker_wake,
                &own,
                wake_mode,
            )
        }),
    };
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
    daemon::wake::remove_pidfile(&pidfile);
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
    own: &Own,
    mode: WakeMode,
) -> anyhow::Result<()> {
    let mut conn = pool.get().context("getting a connection")?;
    let lab = &s.ctx.lab;
    d.acks_drain
        .store(true, std::sync::atomic::Ordering::SeqCst);
    match mode {
        WakeMode::Poll => {
            while !lab.is_stopping() {
                // Between passes nothing is in flight: a drain seen here holds.
                d.confirm_drain();
                let steps = s.run_once(&mut conn, d.is_draining());
                if !steps.iter().any(Step::did_work) {
                    wake.wait(own.poll_interval.value);
                }
            }
            s.end_poll_txn(&mut conn);
        }
        WakeMode::Notify => {
            let mut last_check = Instant::now();
            while !lab.is_stopping() {
                d.confirm_drain();
                if wake.wait(DEAD_CHECK.saturating_sub(last_check.elapsed())) {
                    for _ in 0..own.wake_passes.value {
                        if lab.is_stopping() {
                            break;
                        }
                        d.confirm_drain();
                        let _ = s.run_once(&mut conn, d.is_draining());
                    }
                } else {
                    last_check = Instant::now();
                    let _ = s.strategy.check_dead(&s.ctx, &mut conn);
                }
            }
        }
    }
    Ok(())
}
