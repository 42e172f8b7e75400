//! `locklab run`: one command for the whole lab. A fresh database in the out
//! folder, the three real daemon binaries on free ports, the HTTP load, live
//! progress, the drain in DESIGN.md's order, the final stats, `check`, the
//! table and verdict, and report.json, report.md and timeline.svg.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use schema::db::{DbTarget, LabConn, Policy};
use schema::models::{BuildRequest, Environment};
use schema::settings::ReportSettings;
use schema::stats::ProcessReport;
use schema::types::now_micros;

use crate::check;
use crate::http;
use crate::loadgen::{Load, LoadSpec};
use crate::report::{self, Load as LoadInfo, Report, SCHEMA_VERSION};
use crate::who::{self, witness};

/// What `run` does when a daemon exits or is killed during the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Restart {
    /// Start it again, with its name and listen address, when it died of a
    /// signal or exited non-zero (the default).
    #[default]
    OnFailure,
    /// Leave it dead; the run goes on without it.
    Never,
}

impl std::str::FromStr for Restart {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "on-failure" => Ok(Restart::OnFailure),
            "never" => Ok(Restart::Never),
            other => Err(format!(
                "{other:?} is not a restart policy: on-failure or never"
            )),
        }
    }
}

/// The daemon binaries locklab runs.
pub const DAEMONS: [&str; 3] = ["webui", "runbuilds", "buildinfohelper"];

/// Everything a run needs, resolved.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub preset: String,
    /// Knob flags the user typed, passed on to every daemon as flags.
    pub knob_flags: Vec<(String, String)>,
    pub duration: Duration,
    pub clients: u32,
    pub num: u32,
    pub sleep: Duration,
    pub runbuilds: u32,
    pub drain_timeout: Duration,
    pub out: PathBuf,
    /// `--database-url`: an SQLite file, or a server URL (PostgreSQL, MySQL).
    pub database: Option<String>,
    pub reuse: bool,
    pub events_per_build: u32,
    pub event_delay: Option<String>,
    pub lease: Option<String>,
    pub poll_interval: Option<String>,
    pub environments: Vec<(String, u32)>,
    pub journal_mode: schema::settings::JournalMode,
    /// The MySQL tables' engine (`LAB_MYSQL_ENGINE`), set by the migration.
    pub mysql_engine: schema::settings::MysqlEngine,
    pub request_timeout: Duration,
    /// `--needs-mix`: every Nth HTTP request needs several environments.
    pub needs_mix: u32,
    /// Sample the file's locks with `locklab who` for the whole run, with
    /// this probe (None: not at all).
    pub who: Option<who::ProbeMode>,
    /// What to do when a daemon dies during the run (`--restart`).
    pub restart: Restart,
    /// Faults to inject during the load (`locklab soak`).
    pub faults: Option<crate::faults::FaultPlan>,
}

/// Where the daemon binaries are: next to this executable.
pub fn daemon_binaries() -> anyhow::Result<Vec<(String, PathBuf)>> {
    let dir = daemon::spawn::bin_dir()?;
    let mut found = Vec::new();
    for name in DAEMONS {
        let path = dir.join(name);
        if !path.is_file() {
            bail!(
                "missing daemon binary `{name}` in {}, next to locklab; build all four binaries with \
                 `cargo build --release` (or `cargo build --workspace` for target/debug) and run locklab from there",
                dir.display()
            );
        }
        found.push((name.to_string(), path));
    }
    Ok(found)
}

/// The files a run writes into its out folder (replaced by the next run).
const OWN_FILES: &[&str] = &[
    "locklab.sqlite3",
    "locklab.sqlite3-wal",
    "locklab.sqlite3-shm",
    "locklab.sqlite3-journal",
    "report.json",
    "report.md",
    "timeline.svg",
    "loadgen.jsonl",
    witness::WHO_FILE,
];

/// Creates the out folder (or checks it is writable) and removes the files a
/// previous run left there. Only locklab's own files are touched.
pub fn prepare_out(out: &Path) -> anyhow::Result<OutLock> {
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create the out folder {}", out.display()))?;
    let lock = OutLock::take(out)?;
    let probe = out.join(".locklab-write-test");
    std::fs::write(&probe, b"")
        .with_context(|| format!("the out folder {} is not writable", out.display()))?;
    let _ = std::fs::remove_file(&probe);
    for name in OWN_FILES {
        let p = out.join(name);
        if p.exists() {
            std::fs::remove_file(&p)
                .with_context(|| format!("removing the old {}", p.display()))?;
        }
    }
    if let Ok(entries) = std::fs::read_dir(out) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let ours = (name.starts_with("stats-") && name.ends_with(".json"))
                || (name.starts_with("trace-") && name.ends_with(".jsonl"))
                || (name.starts_with("stats-") && name.ends_with(".json.tmp"));
            if ours {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let logs = out.join("logs");
    if logs.is_dir() {
        for e in std::fs::read_dir(&logs).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().ends_with(".log") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    Ok(lock)
}

/// The out folder's lock, held for a whole run: `flock` on
/// `OUT/.locklab-run.lock`, which names the run's PID. A second run on the
/// same folder is refused instead of deleting the first one's files; the
/// kernel drops the lock if the run dies.
#[derive(Debug)]
pub struct OutLock {
    _file: std::fs::File,
}

impl OutLock {
    pub fn take(out: &Path) -> anyhow::Result<OutLock> {
        use std::io::{Read, Seek, Write};
        use std::os::unix::io::AsRawFd;
        let path = out.join(".locklab-run.lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on a descriptor we own; non-blocking.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            bail!(
                "another `locklab run` ({}) is using {}; wait for it to finish, or give another --out",
                match holder.trim() {
                    "" => "its pid unknown".to_string(),
                    pid => format!("pid {pid}"),
                },
                out.display()
            );
        }
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{}", std::process::id());
        Ok(OutLock { _file: file })
    }
}

/// A supervised daemon: its current instance, and the files of every
/// instance it had (a restarted daemon keeps its name, its listen address
/// and its log; each instance writes stats and a trace of its own).
struct Spawned {
    name: String,
    bin: PathBuf,
    /// Its arguments, without `--listen`, `--stats-out` and `--trace-out`.
    args: Vec<OsString>,
    /// Variables set for it (webui: its peers and the runs folder).
    env: Vec<(String, String)>,
    child: daemon::spawn::Child,
    url: String,
    /// The address it listens on (`127.0.0.1:PORT`), kept across restarts.
    listen: String,
    /// Every instance's stats and trace files, the current one last.
    stats_files: Vec<PathBuf>,
    trace_files: Vec<PathBuf>,
    /// Every instance's PID.
    pids: Vec<i32>,
    log: PathBuf,
    exits: Vec<schema::stats::ProcessExit>,
    /// Exited and not restarted.
    dead: bool,
}

/// One instance's files: its stats, its trace, and the daemon's log (which
/// a restarted instance appends to).
struct InstanceFiles<'a> {
    stats_out: &'a Path,
    trace_out: &'a Path,
    log: &'a Path,
    append_log: bool,
}

/// Starts one instance of a daemon.
fn start_instance(
    bin: &Path,
    name: &str,
    args: &[OsString],
    env: &[(String, String)],
    listen: &str,
    files: InstanceFiles<'_>,
) -> anyhow::Result<daemon::spawn::Child> {
    let mut all = args.to_vec();
    all.extend([
        "--listen".into(),
        listen.into(),
        "--stats-out".into(),
        files.stats_out.into(),
        "--trace-out".into(),
        files.trace_out.into(),
    ]);
    daemon::spawn::spawn(daemon::spawn::Spec {
        bin,
        name,
        args: all,
        env: env.to_vec(),
        env_remove: Vec::new(),
        log: files.log.to_path_buf(),
        append_log: files.append_log,
        startup_timeout: Duration::from_secs(30),
    })
}

fn spawn_daemon(
    bin: &Path,
    name: &str,
    db: &str,
    opts: &RunOptions,
    extra: &[(String, String)],
    env: Vec<(String, String)>,
) -> anyhow::Result<Spawned> {
    let stats_out = opts.out.join(format!("stats-{name}.json"));
    let trace_out = opts.out.join(format!("trace-{name}.jsonl"));
    let log = opts.out.join("logs").join(format!("{name}.log"));
    let mut args: Vec<OsString> = vec![
        "--database-url".into(),
        db.into(),
        "--name".into(),
        name.into(),
        "--preset".into(),
        opts.preset.clone().into(),
        "--stats-interval".into(),
        "2s".into(),
    ];
    for (flag, value) in opts.knob_flags.iter().chain(extra) {
        args.push(flag.into());
        args.push(value.into());
    }
    if let Some(lease) = &opts.lease {
        args.push("--lease".into());
        args.push(lease.into());
    }
    let child = start_instance(
        bin,
        name,
        &args,
        &env,
        "127.0.0.1:0",
        InstanceFiles {
            stats_out: &stats_out,
            trace_out: &trace_out,
            log: &log,
            append_log: false,
        },
    )?;
    let listen = child.url.trim_start_matches("http://").to_string();
    Ok(Spawned {
        name: name.to_string(),
        bin: bin.to_path_buf(),
        args,
        env,
        url: child.url.clone(),
        pids: vec![child.pid()],
        child,
        listen,
        stats_files: vec![stats_out],
        trace_files: vec![trace_out],
        log,
        exits: Vec::new(),
        dead: false,
    })
}

/// What the run is doing, for a restarted daemon to join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Load,
    Drain,
    /// The drain is over: a death is recorded, never restarted.
    Shutdown,
}

/// Watches every daemon: one that exited or was killed is logged with how and
/// when, recorded in its `exits`, and (under `--restart on-failure`) started
/// again with its name, listen address and log, then told where the run is
/// (its load window starts; in the drain it drains). A restart that fails
/// ends the run with the daemon's last log lines.
fn supervise(
    daemons: &mut [Spawned],
    opts: &RunOptions,
    agent: &ureq::Agent,
    load_start_us: i64,
    phase: Phase,
) -> anyhow::Result<()> {
    use std::os::unix::process::ExitStatusExt;
    for d in daemons.iter_mut().filter(|d| !d.dead) {
        let Ok(Some(status)) = d.child.child.try_wait() else {
            continue;
        };
        let at_us = now_micros();
        let at_s = (at_us - load_start_us) as f64 / 1e6;
        let (code, signal) = (status.code(), status.signal());
        let how = match (code, signal) {
            (_, Some(sig)) => format!("was killed by signal {sig}"),
            (Some(c), None) => format!("exited with code {c}"),
            (None, None) => "ended".to_string(),
        };
        let restart =
            phase != Phase::Shutdown && opts.restart == Restart::OnFailure && !status.success();
        eprintln!(
            "locklab: {} (pid {}) {how} {at_s:.1} s into the run{}",
            d.name,
            d.child.pid(),
            if restart {
                "; restarting it"
            } else {
                "; not restarted"
            }
        );
        d.exits.push(schema::stats::ProcessExit {
            at_us,
            at_s,
            code,
            signal,
            restarted: restart,
        });
        if !restart {
            d.dead = true;
            continue;
        }
        let n = d.stats_files.len() + 1;
        let stats_out = opts.out.join(format!("stats-{}.{n}.json", d.name));
        let trace_out = opts.out.join(format!("trace-{}.{n}.jsonl", d.name));
        let child = start_instance(
            &d.bin,
            &d.name,
            &d.args,
            &d.env,
            &d.listen,
            InstanceFiles {
                stats_out: &stats_out,
                trace_out: &trace_out,
                log: &d.log,
                append_log: true,
            },
        )
        .with_context(|| format!("{} died and could not be started again", d.name))?;
        d.pids.push(child.pid());
        d.url = child.url.clone();
        d.child = child;
        d.stats_files.push(stats_out);
        d.trace_files.push(trace_out);
        http::wait_healthy(
            agent,
            &http::join(&d.url, "/healthz"),
            Duration::from_secs(30),
        )
        .with_context(|| format!("{} restarted but is not healthy", d.name))?;
        let _ = http::post_empty(agent, &http::join(&d.url, "/load-start"));
        if phase == Phase::Drain {
            let _ = http::post_empty(agent, &http::join(&d.url, "/drain"));
        }
        eprintln!(
            "locklab: {} restarted (pid {}, instance {n}) on {}",
            d.name,
            d.child.pid(),
            d.listen
        );
    }
    Ok(())
}

/// Whether `child` has exited (or exits within `within`), without reaping
/// it: the supervisor does that, and records how it ended.
fn wait_exit_unreaped(child: &mut std::process::Child, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        // SAFETY: waitid on our own child with WNOWAIT leaves it unreaped;
        // the struct is zeroed and written by the kernel.
        let exited = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let pid = child.id() as libc::id_t;
            libc::waitid(
                libc::P_PID,
                pid,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            ) == 0
                && info.si_pid() != 0
        };
        if exited {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn fetch_stats_json(agent: &ureq::Agent, d: &Spawned) -> Option<serde_json::Value> {
    http::get_json(agent, &http::join(&d.url, "/api/stats")).ok()
}

fn fetch_stats(agent: &ureq::Agent, d: &Spawned) -> Option<ProcessReport> {
    fetch_stats_json(agent, d).and_then(|v| serde_json::from_value(v).ok())
}

fn progress_message(
    agent: &ureq::Agent,
    daemons: &[Spawned],
    load: &crate::loadgen::LoadState,
) -> String {
    let mut parts = vec![format!(
        "loadgen {} req ({} ok)",
        load.requests.load(Ordering::Relaxed),
        load.ok.load(Ordering::Relaxed)
    )];
    for d in daemons {
        match fetch_stats(agent, d) {
            // A restarted daemon's counts start again at 0.
            Some(s) => parts.push(format!(
                "{} ok={} failed={}{}",
                s.name,
                s.ok,
                s.failed_total(),
                if d.exits.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (restarted {}×)",
                        d.exits.iter().filter(|e| e.restarted).count()
                    )
                }
            )),
            None if d.dead => parts.push(format!("{} dead", d.name)),
            None => parts.push(format!("{} not answering", d.name)),
        }
    }
    parts.join(" · ")
}

/// Counts what the drain waits for: requests in progress and environments held.
fn drain_state(conn: &mut LabConn) -> Option<(i64, i64)> {
    let c = conn.diesel();
    let states = BuildRequest::count_by_state(c).ok()?;
    let inprogress = states.get("inprogress").copied().unwrap_or(0)
        + states.get("cancelling").copied().unwrap_or(0);
    let envs = Environment::count_by_state(c).ok()?;
    let held = envs.get("locked").copied().unwrap_or(0) + envs.get("running").copied().unwrap_or(0);
    Some((inprogress, held))
}

/// What a drain that timed out leaves behind, in words: builds in progress,
/// environments held, and operations stalled right now.
fn abandoned(conn: Option<&mut LabConn>, agent: &ureq::Agent, daemons: &[Spawned]) -> String {
    let mut parts = Vec::new();
    if let Some(conn) = conn {
        abandoned_in_db(conn, &mut parts);
    } else {
        parts.push("the database's state (it stayed locked)".to_string());
    }
    for d in daemons {
        if let Some(s) = fetch_stats(agent, d) {
            for st in s.stalls.iter().filter(|st| st.ongoing) {
                parts.push(format!(
                    "{} stalled in {} ({}, {} retries, {:.1} s)",
                    d.name,
                    st.op,
                    st.class.as_deref().unwrap_or("no failure"),
                    st.retries,
                    st.seconds
                ));
            }
        }
    }
    if parts.is_empty() {
        "nothing in progress".to_string()
    } else {
        parts.join("; ")
    }
}

fn abandoned_in_db(conn: &mut LabConn, parts: &mut Vec<String>) {
    if let Ok(builds) = schema::models::Build::unfinished(conn.diesel()) {
        let owned: Vec<String> = builds
            .iter()
            .filter(|b| b.request_id.is_some())
            .take(10)
            .map(|b| {
                format!(
                    "build {} ({})",
                    b.id,
                    b.owner.as_deref().unwrap_or("not taken by an ingester")
                )
            })
            .collect();
        if !owned.is_empty() {
            parts.push(format!("unfinished {}", owned.join(", ")));
        }
    }
    if let Some((_, held)) = drain_state(conn) {
        if held > 0 {
            parts.push(format!("{held} environments held"));
        }
    }
}

/// Runs the lab once and returns its report (also written to the out folder).
pub fn run_lab(opts: &RunOptions, interrupted: &Arc<AtomicBool>) -> anyhow::Result<Report> {
    let bins = daemon_binaries()?;
    let _out_lock = prepare_out(&opts.out)?;
    let given = opts
        .database
        .as_deref()
        .map(DbTarget::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let target = match given {
        Some(DbTarget::Server(server)) => fresh_server_database(&server, opts.reuse)?,
        Some(DbTarget::Sqlite(p)) => {
            if p.exists() && !opts.reuse {
                bail!(
                    "{} exists; pass --reuse to run on it (it must be a locklab database), or give another path",
                    p.display()
                );
            }
            if p.exists()
                && !schema::migrate::has_sqlite_header(&p)
                && std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0) > 0
            {
                bail!(
                    "{} is not an SQLite database; refusing to touch it",
                    p.display()
                );
            }
            DbTarget::Sqlite(p)
        }
        None => DbTarget::Sqlite(opts.out.join("locklab.sqlite3")),
    };
    let migrated = schema::migrate::migrate_with(
        &target,
        opts.journal_mode,
        opts.mysql_engine,
        &opts.environments,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let db_arg = match &target {
        DbTarget::Sqlite(p) => p.display().to_string(),
        DbTarget::Server(s) => s.url().to_string(),
    };
    eprintln!(
        "locklab: database {} ({}), preset {}, {} clients × NUM {} for {}",
        target.display(),
        match &target {
            DbTarget::Sqlite(_) => format!("journal_mode={}", migrated.journal_mode),
            DbTarget::Server(_) => format!("{}, a fresh database for this run", target.kind()),
        },
        opts.preset,
        opts.clients,
        opts.num,
        schema::settings::fmt_duration(opts.duration)
    );
    // The witness reads the kernel's locks on an SQLite file; a server keeps
    // its locks to itself.
    let witness = target
        .sqlite_path()
        .and_then(|db_path| start_witness(db_path, opts));

    let mut daemons: Vec<Spawned> = Vec::new();
    let bin = |n: &str| {
        bins.iter()
            .find(|(b, _)| b == n)
            .map(|(_, p)| p.clone())
            .unwrap_or_default()
    };
    let mut ingest_flags = vec![(
        "--events-per-build".to_string(),
        opts.events_per_build.to_string(),
    )];
    if let Some(d) = &opts.event_delay {
        ingest_flags.push(("--event-delay".to_string(), d.clone()));
    }
    let mut sched_flags = Vec::new();
    if let Some(p) = &opts.poll_interval {
        sched_flags.push(("--poll-interval".to_string(), p.clone()));
    }
    for i in 1..=opts.runbuilds {
        let name = if i == 1 {
            "runbuilds".to_string()
        } else {
            format!("runbuilds-{i}")
        };
        daemons.push(spawn_daemon(
            &bin("runbuilds"),
            &name,
            &db_arg,
            opts,
            &sched_flags,
            Vec::new(),
        )?);
    }
    daemons.push(spawn_daemon(
        &bin("buildinfohelper"),
        "buildinfohelper",
        &db_arg,
        opts,
        &ingest_flags,
        Vec::new(),
    )?);
    // webui last: its dashboard scrapes the others (LAB_STATS_URLS) and lists
    // the runs in the output folder (LAB_RUNS_DIR); it stays first in the
    // table.
    let peers: Vec<String> = daemons.iter().map(|d| d.url.clone()).collect();
    let webui_env = vec![
        ("LAB_STATS_URLS".to_string(), peers.join(",")),
        ("LAB_RUNS_DIR".to_string(), opts.out.display().to_string()),
    ];
    daemons.insert(
        0,
        spawn_daemon(&bin("webui"), "webui", &db_arg, opts, &[], webui_env)?,
    );
    let agent = http::agent(Duration::from_secs(2));
    for d in &daemons {
        http::wait_healthy(
            &agent,
            &http::join(&d.url, "/healthz"),
            Duration::from_secs(30),
        )
        .with_context(|| format!("{} is not healthy", d.name))?;
    }
    let webui_url = daemons[0].url.clone();

    // The load phase.
    let spec = LoadSpec {
        target: webui_url.clone(),
        clients: opts.clients,
        num: opts.num,
        sleep: opts.sleep,
        duration: opts.duration,
        request_timeout: opts.request_timeout,
        needs_mix: opts.needs_mix,
        project: "locklab-demo".to_string(),
        log: Some(opts.out.join("loadgen.jsonl")),
    };
    // The load window of every daemon's rates starts now.
    for d in &daemons {
        let _ = http::post_empty(&agent, &http::join(&d.url, "/load-start"));
    }
    let load = Load::start(&spec)?;
    let load_start_us = now_micros();
    let tty = std::io::stderr().is_terminal();
    let bar = if tty {
        let bar = ProgressBar::new(opts.duration.as_secs().max(1));
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:25}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Some(bar)
    } else {
        None
    };
    let mut last_plain = Instant::now();
    let mut injector = opts.faults.clone().map(|plan| {
        crate::faults::Injector::new(plan, target.sqlite_path().map(Path::to_path_buf))
    });
    while load.started.elapsed() < opts.duration && !interrupted.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(500));
        if let Err(e) = supervise(&mut daemons, opts, &agent, load_start_us, Phase::Load) {
            load.state.stop.store(true, Ordering::SeqCst);
            if let Some(i) = injector.take() {
                i.finish(load.started.elapsed());
            }
            let _ = load.finish();
            return Err(e);
        }
        if let Some(i) = injector.as_mut() {
            let live: Vec<crate::faults::Target> = daemons
                .iter()
                .filter(|d| !d.dead)
                .map(|d| crate::faults::Target {
                    name: d.name.clone(),
                    pid: d.child.pid(),
                })
                .collect();
            i.tick(load.started.elapsed(), &live);
        }
        if let Some(bar) = &bar {
            bar.set_position(load.started.elapsed().as_secs());
            bar.set_message(progress_message(&agent, &daemons, &load.state));
        } else if last_plain.elapsed() >= Duration::from_secs(5) {
            last_plain = Instant::now();
            eprintln!(
                "locklab: {:>4.0}s {}",
                load.started.elapsed().as_secs_f64(),
                progress_message(&agent, &daemons, &load.state)
            );
        }
    }
    if interrupted.load(Ordering::SeqCst) {
        load.state.stop.store(true, Ordering::SeqCst);
        eprintln!("locklab: interrupted: stopping the load, then draining");
    }
    // The faults end with the load: space comes back, the holder lets go.
    let faults = injector.map(|i| i.finish(load.started.elapsed()));
    // 1. the loadgen stops sending and waits for its in-flight replies
    let (loadgen, load_elapsed) = load.finish()?;
    let load_end_us = now_micros();
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }

    // 2-4. webui refuses creates, runbuilds stops claiming, buildinfohelper
    // keeps finishing
    supervise(&mut daemons, opts, &agent, load_start_us, Phase::Drain)?;
    for i in 0..daemons.len() {
        if daemons[i].dead {
            continue;
        }
        let url = daemons[i].url.clone();
        if let Err(e) = http::post_empty(&agent, &http::join(&url, "/drain")) {
            // Killed just now (the OOM killer, a soak): once it has exited,
            // the supervisor restarts it, and tells the new instance to drain.
            let d = &mut daemons[i];
            let exited = wait_exit_unreaped(&mut d.child.child, Duration::from_secs(5));
            if !exited {
                return Err(e).with_context(|| format!("draining {}", d.name));
            }
            supervise(&mut daemons, opts, &agent, load_start_us, Phase::Drain)?;
            continue;
        }
        if daemons[i].name.starts_with("runbuilds") {
            // A scheduler waiting for a notification confirms the drain sooner.
            let _ = http::post_empty(&agent, &http::join(&url, "/wake"));
        }
    }
    let drain_start = Instant::now();
    // The drain's own reads wait briefly: a database whose lock is held for
    // good (a failed COMMIT that nobody rolls back) must not stall the drain.
    let watch_policy = Arc::new(Policy {
        busy_timeout: Duration::from_millis(200),
        ..Policy::default()
    });
    let mut watcher: Option<LabConn> = None;
    let spinner = if tty {
        let s = ProgressBar::new_spinner();
        s.enable_steady_tick(Duration::from_millis(200));
        Some(s)
    } else {
        None
    };
    let mut last_plain = Instant::now();
    loop {
        supervise(&mut daemons, opts, &agent, load_start_us, Phase::Drain)?;
        if watcher.is_none() {
            watcher = LabConn::open(&target, watch_policy.clone(), false).ok();
        }
        let state = watcher.as_mut().and_then(drain_state);
        // Done when nothing is in progress or held, and every scheduler has
        // confirmed that no claim started before the drain is still in flight.
        if let Some((0, 0)) = state {
            if daemons.iter().all(|d| {
                fetch_stats_json(&agent, d)
                    .map(|v| v["drained"].as_bool().unwrap_or(true))
                    .unwrap_or(true)
            }) {
                break;
            }
        }
        if drain_start.elapsed() >= opts.drain_timeout {
            eprintln!(
                "locklab: drain timeout ({}) passed; stopping anyway and abandoning: {}",
                schema::settings::fmt_duration(opts.drain_timeout),
                abandoned(watcher.as_mut(), &agent, &daemons)
            );
            break;
        }
        let msg = match state {
            Some((b, e)) => format!("draining: {b} builds in progress, {e} environments held"),
            None => "draining (the database is locked: its state cannot be read now)".to_string(),
        };
        if let Some(s) = &spinner {
            s.set_message(msg);
        } else if last_plain.elapsed() >= Duration::from_secs(5) {
            last_plain = Instant::now();
            eprintln!("locklab: {msg}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(watcher);
    if let Some(s) = &spinner {
        s.finish_and_clear();
    }
    let drain_s = drain_start.elapsed().as_secs_f64();
    let drain_end = now_micros();
    let who_report = stop_witness(witness);

    // Then every daemon gets SIGTERM and writes its final stats. A death
    // seen now (before the SIGTERM) is recorded, not restarted.
    supervise(&mut daemons, opts, &agent, load_start_us, Phase::Shutdown)?;
    for d in daemons.iter().filter(|d| !d.dead) {
        d.child.signal(daemon::spawn::SIGTERM);
    }
    for d in daemons.iter_mut().filter(|d| !d.dead) {
        match d.child.terminate(Duration::from_secs(30)) {
            Ok(status) if !status.success() => {
                eprintln!(
                    "locklab: {} exited with {status}; see {}",
                    d.name,
                    d.log.display()
                );
            }
            Ok(_) => {}
            Err(e) => eprintln!("locklab: {e:#}"),
        }
    }
    let mut processes = Vec::new();
    let mut settings: Option<ReportSettings> = None;
    for d in &daemons {
        // Every instance's stats, summed: a killed instance left its last
        // periodic write (every 2 s), the last one its final stats.
        let mut merged: Option<ProcessReport> = None;
        for (i, file) in d.stats_files.iter().enumerate() {
            let last = i + 1 == d.stats_files.len();
            let text = match std::fs::read_to_string(file) {
                Ok(t) => t,
                // An instance killed before its first write left nothing.
                Err(_) if !last => continue,
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "{} wrote no final stats to {}",
                        d.name,
                        file.display()
                    )))
                }
            };
            let v: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", file.display()))?;
            let killed = d
                .exits
                .get(i)
                .is_some_and(|e| e.signal.is_some() || e.code != Some(0));
            if v["final"].as_bool() != Some(true) {
                if killed {
                    eprintln!(
                        "locklab: {} instance {} died: its counts are from its last periodic write \
                         ({}), up to 2 s before it died",
                        d.name,
                        i + 1,
                        file.display()
                    );
                } else {
                    eprintln!(
                        "locklab: {} wrote no final stats (it did not stop cleanly; see {}): its \
                         counts are from its last periodic write, with operations still in flight",
                        d.name,
                        d.log.display()
                    );
                }
            }
            if settings.is_none() {
                settings = v
                    .get("settings")
                    .cloned()
                    .and_then(|s| serde_json::from_value(s).ok());
            }
            let mut p = serde_json::from_value::<ProcessReport>(v)
                .with_context(|| format!("parsing {}", file.display()))?;
            if killed {
                p.mark_killed();
            }
            match merged.as_mut() {
                Some(m) => m.merge(&p),
                None => merged = Some(p),
            }
        }
        let mut p = merged.with_context(|| format!("{} left no stats", d.name))?;
        p.name = d.name.clone();
        p.exits = d.exits.clone();
        processes.push(p);
    }
    let traces: Vec<PathBuf> = daemons
        .iter()
        .flat_map(|d| d.trace_files.iter().cloned())
        .filter(|p| p.exists())
        .collect();
    // Each instance's trace with its PID, for the witness.
    let instance_traces: Vec<(i32, PathBuf)> = daemons
        .iter()
        .flat_map(|d| d.pids.iter().copied().zip(d.trace_files.iter().cloned()))
        .collect();
    let daemon_pids: HashMap<i32, String> = daemons
        .iter()
        .flat_map(|d| d.pids.iter().map(|pid| (*pid, d.name.clone())))
        .collect();
    drop(daemons);

    let log_lines = check::read_log(&opts.out.join("loadgen.jsonl"))?;
    let checked = check::check(&target, Some(&log_lines), Some(drain_end))?;
    let mut report = Report {
        schema_version: SCHEMA_VERSION,
        preset: opts.preset.clone(),
        backend: target.kind().to_string(),
        duration_s: load_elapsed.as_secs_f64(),
        environment: report::EnvironmentInfo {
            server_version: schema::migrate::server_version(&target),
            ..report::environment_info(target.side_dir())
        },
        load: LoadInfo {
            clients: opts.clients,
            num: opts.num,
            sleep_s: opts.sleep.as_secs_f64(),
            events_per_build: opts.events_per_build,
            event_delay_s: event_delay(opts).as_secs_f64(),
            needs_mix: opts.needs_mix,
        },
        settings: settings.context("webui reported no settings")?,
        processes,
        loadgen,
        check: checked.counts.clone(),
        verdict: Vec::new(),
        drain_s,
        identity_violations: Vec::new(),
        holders_at_failures: crate::holders::at_failures(&traces),
        queue_wait_ms: checked.queue_wait_ms,
        load_end_us: Some(load_end_us),
        load_s: load_elapsed.as_secs_f64(),
        windows: report::figure_windows(),
        holders: Vec::new(),
        witness: None,
        faults,
    };
    report.identity_violations = report.check_identities();
    for v in &report.identity_violations {
        eprintln!("locklab: counting identity violated: {v}");
    }
    report.verdict = report::verdict(&report);
    attach_witness(
        &mut report,
        who_report,
        &daemon_pids,
        &instance_traces,
        &opts.out,
    )?;
    write_outputs(&opts.out, &report, &traces, &checked)?;
    Ok(report)
}

/// The event pace the ingester used: the flag, else the preset's.
fn event_delay(opts: &RunOptions) -> Duration {
    opts.event_delay
        .as_deref()
        .and_then(|d| schema::settings::parse_duration(d).ok())
        .or_else(|| {
            schema::settings::Preset::by_name(&opts.preset)
                .ok()
                .and_then(|p| p.event_delay)
        })
        .unwrap_or(Duration::ZERO)
}

/// Writes report.json, report.md and timeline.svg.
pub fn write_outputs(
    out: &Path,
    report: &Report,
    traces: &[PathBuf],
    checked: &check::CheckResult,
) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(report).context("serialising the report")?;
    std::fs::write(out.join("report.json"), json).context("writing report.json")?;
    let mut md = report::render_markdown(report);
    if !checked.examples.is_empty() {
        md.push_str("\n## Check examples\n\n");
        for (what, examples) in &checked.examples {
            md.push_str(&format!("- {what}: {}\n", examples.join("; ")));
        }
    }
    std::fs::write(out.join("report.md"), md).context("writing report.md")?;
    crate::timeline::write_with_os(
        traces,
        &os_lanes(out),
        &out.join("timeline.svg"),
        &format!(
            "locklab · preset {} · who held SQLite's write lock",
            report.preset
        ),
        report.load_end_us,
        &crate::timeline::deaths_of(report),
    )?;
    Ok(())
}

/// Whether `--strict` fails this report: any gave_up, or any violation.
pub fn strict_failure(r: &Report) -> Option<String> {
    let gave_up = r.gave_up_total();
    let violations = r.check.violations();
    let identities = r.identity_violations.len();
    if gave_up == 0 && violations == 0 && identities == 0 {
        return None;
    }
    Some(format!(
        "--strict: {gave_up} operations gave up, {violations} check violations, {identities} counting identities violated"
    ))
}

/// The witness's sampling interval during a run.
pub const WITNESS_INTERVAL: Duration = Duration::from_millis(1);

/// A fresh database for a run on a server: the database the URL names is
/// dropped and created again, but only if it holds nothing but locklab's
/// tables (or does not exist). `--reuse` keeps it as it is.
fn fresh_server_database(
    server: &schema::backend::ServerUrl,
    reuse: bool,
) -> anyhow::Result<DbTarget> {
    let target = DbTarget::Server(server.clone());
    if !reuse {
        // Missing, empty, pending or a lab database: all safe to recreate.
        if let Err(schema::migrate::SchemaError::Foreign { tables, .. }) =
            schema::migrate::startup_check(&target)
        {
            bail!(
                "{}: the database holds tables locklab does not own ({tables}); a run drops and \
                 recreates its database, so name a database of its own",
                target.display()
            );
        }
        schema::migrate::create_server_database(server, true)
            .map_err(|e| anyhow::anyhow!("{}: {e}", target.display()))?;
    }
    Ok(target)
}

/// Starts `locklab who` on the run's database, the independent witness of
/// who held the write lock. A run goes on without it if it cannot start.
fn start_witness(db: &Path, opts: &RunOptions) -> Option<who::Sampler> {
    let probe = opts.who?;
    let options = who::SamplerOptions {
        interval: WITNESS_INTERVAL,
        probe,
        live: None,
    };
    match who::Sampler::start(db, options) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!(
                "locklab: the lock witness (locklab who) did not start: {e:#}; the report will have no holders"
            );
            None
        }
    }
}

/// Stops the witness (after the drain, when locklab's own connection is
/// closed: closing the sampler's descriptor would drop this process's POSIX
/// locks on the file).
fn stop_witness(s: Option<who::Sampler>) -> Option<who::WhoReport> {
    match s?.stop() {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("locklab: the lock witness failed: {e:#}");
            None
        }
    }
}

/// Adds the witness to the report (holders beside the daemons' traces, the
/// verdict's lines) and writes who.json for the timeline.
fn attach_witness(
    report: &mut Report,
    who: Option<who::WhoReport>,
    daemons: &HashMap<i32, String>,
    traces: &[(i32, PathBuf)],
    out: &Path,
) -> anyhow::Result<()> {
    let Some(mut who) = who else {
        return Ok(());
    };
    let mut names = daemons.clone();
    names.insert(
        i32::try_from(std::process::id()).unwrap_or(0),
        witness::SELF_NAME.to_string(),
    );
    who.label(&names);
    let totals = witness::trace_totals(traces, (who.started_us, who.ended_us))?;
    report.holders = witness::holders(&who, daemons, &totals);
    report.witness = Some(witness::witness(&who));
    report.verdict.extend(witness::verdict_lines(
        &report.holders,
        report.witness.as_ref(),
        report.settings.busy_timeout_ms,
    ));
    let json = serde_json::to_vec(&who).context("serialising who.json")?;
    std::fs::write(out.join(witness::WHO_FILE), json).context("writing who.json")
}

/// The timeline's OS-observed lanes, from DIR/who.json if the run wrote one.
pub fn os_lanes(dir: &Path) -> Vec<crate::timeline::OsLane> {
    match witness::read_who(dir) {
        Ok(Some(who)) => witness::timeline_lanes(&who),
        Ok(None) => Vec::new(),
        Err(e) => {
            eprintln!("locklab: {e:#}; the timeline has no OS-observed lanes");
            Vec::new()
        }
    }
}
