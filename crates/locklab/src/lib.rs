//! locklab's CLI. `main` parses and calls [`run`]; every subcommand lives here
//! or in its module, so tests drive them in-process too.
//!
//! Crates chosen: clap (required); comfy-table for tables (unicode widths);
//! indicatif for the live progress (it stays quiet when stderr is not a
//! terminal, where plain lines are printed instead); svg for the timeline and
//! the matrix chart; ureq for blocking HTTP (no async runtime in a CLI).

pub mod ablate;
pub mod advise;
pub mod bench;
pub mod check;
pub mod faults;
pub mod hold;
pub mod holders;
pub mod http;
pub mod loadgen;
pub mod matrix;
pub mod queue;
pub mod report;
pub mod run;
pub mod timeline;
pub mod who;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Parser, Subcommand};
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};
use schema::db::DbTarget;
use schema::settings::{
    def, parse_duration, parse_environments, process_env, Def, Flags, Knobs, Resolver,
    DEFAULT_ENVIRONMENTS, DURABILITY_NOTE, PRESETS,
};
use schema::stats::ProcessReport;

/// locklab: reproduce, explain and cure `database is locked`.
#[derive(Debug, Parser)]
#[command(
    name = "locklab",
    version,
    about = "Reproduce, explain and cure SQLite's `database is locked` with Toaster's three processes",
    long_about = "locklab runs three real processes on one SQLite file, shaped like Yocto Toaster: \
webui (a Django-like API), runbuilds (the scheduler) and buildinfohelper (the build-event \
ingester). It counts every lock failure per process, classified from SQLite's real error codes, \
explains the mechanism and the remedy, and measures what each Django-style knob costs.\n\n\
Quick start: `locklab run` (30 s with the django-default preset), then `locklab run --preset \
robust`. Every setting can also come from the environment variable shown in each command's --help; \
an empty variable counts as unset; precedence is flag > LAB_* > the demo's WAL/TIMEOUT/\
ATOMIC_REQUESTS/CLIENTS/NUM/SLEEP/DURATION > preset > default."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or upgrade a database: tables, journal mode, environments.
    Migrate(MigrateArgs),
    /// Run the whole lab once: daemons, load, drain, check, table and verdict.
    Run(RunArgs),
    /// Run several presets under the same load and compare them.
    Matrix(MatrixArgs),
    /// Print the presets: their knobs and what to expect.
    Presets(PresetsArgs),
    /// What to change in your own stack, as code to paste, for the failure
    /// classes of a run (or for all of them).
    Advise(AdviseArgs),
    /// Print a run's table again, or build it from running daemons.
    Report(ReportArgs),
    /// Check a database's invariants (lost, duplicated, double-claimed...).
    Check(CheckArgs),
    /// Draw the lock timeline (SVG) from a run's traces.
    Timeline(TimelineArgs),
    /// Send the HTTP load on its own (for compose and other servers).
    Loadgen(LoadgenArgs),
    /// Exit 0 if URL answers HTTP 200 (container healthchecks).
    Probe(ProbeArgs),
    /// Show which process holds an SQLite file's lock, live, for any program.
    Who(who::cli::WhoArgs),
    /// Hold an SQLite file's write lock from this process for a while (BEGIN
    /// EXCLUSIVE, then ROLLBACK): a foreign lock holder, to see what the other
    /// processes on the file do meanwhile.
    Hold(HoldArgs),
    /// Run the robust preset under faults (daemons killed, a foreign lock
    /// holder, a full disk), then check that nothing was lost.
    Soak(SoakArgs),
    /// Measure how close the robust lab runs to this machine's own
    /// single-writer ceiling, every figure as a ratio to it.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "\
Parts, in one run on one file system: the single-writer ceiling (one connection alone inserting \
the lab's build events with the robust preset's pragmas, 1, 100 and 1000 per transaction); the \
robust preset under the default load (rows/s per process and in total, webui's HTTP p50/p99, CPU \
and peak RSS per daemon); the ingester alone (one 15,000-event build, unpaced); webui alone under \
the same HTTP load. Every rate is a ratio to the batched ceiling of the same run: this machine's \
disk speed varies between runs, ratios compare. The `who` sampler is off. Writes DIR/bench.json \
and prints a table.")]
pub struct BenchArgs {
    #[command(flatten)]
    pub knobs: daemon::KnobArgs,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Folder for bench.json and each part's files.
    #[arg(long, default_value = "locklab-bench", value_name = "DIR")]
    pub out: PathBuf,
    /// A short version (5 s loads, fewer rows, a 3,000-event build), for CI.
    #[arg(long)]
    pub quick: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Under the rollback journal BEGIN EXCLUSIVE keeps readers out too; under WAL it is the write lock \
only. Nothing is written: the transaction is rolled back. Ctrl-C lets go early.")]
pub struct HoldArgs {
    /// The SQLite file (it must exist).
    #[arg(long, env = "DATABASE_URL", value_name = "PATH")]
    pub database_url: PathBuf,
    /// How long to hold the lock once taken.
    #[arg(long = "for", default_value = "8s", value_name = "DURATION")]
    pub hold_for: String,
    /// How long to wait for the lock before giving up (the busy timeout).
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub timeout: String,
    /// Print the outcome as one JSON line ({"waited_s":…,"held_s":…}) instead
    /// of a sentence.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "\
The schedule, from the start of the load: a SIGKILL of a random daemon every 30 s (the run \
restarts it); a foreign process holding the write lock (BEGIN EXCLUSIVE) for 8 s every minute, \
from 15 s; the disk full for 10 s once, from 40 s (RLIMIT_FSIZE 0 on every daemon: no file may \
grow, so SQLite's writes fail with SQLITE_IOERR). With --duration 60s or more each fault fires at \
least once. Then the drain, the table, and `check`. report.json lists every fault under `faults`.

Exit status: 0 when every check count is 0 (nothing lost, duplicated, double-claimed or \
double-booked) and integrity_check is ok; 1 otherwise; 2 when the soak could not run.")]
pub struct SoakArgs {
    #[command(flatten)]
    pub knobs: daemon::KnobArgs,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Folder for the database, logs, traces and reports (locklab's own files in
    /// it are replaced).
    #[arg(long, default_value = "locklab-soak", value_name = "DIR")]
    pub out: PathBuf,
    /// Seed of the choice of daemon to kill (printed, so a soak can be replayed).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The database to create or upgrade: an SQLite file, or a server URL
    /// (postgres://user:password@host/db, mysql://…), whose database is created
    /// when missing. Default: the preset's server for a server preset, else
    /// locklab.sqlite3.
    #[arg(long, env = "DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// Preset whose journal mode (or MySQL engine) to set (see `locklab presets`).
    #[arg(long, env = "LAB_PRESET", value_name = "NAME")]
    pub preset: Option<String>,
    /// Journal mode: delete or wal (alias WAL=true/false). It belongs to the file.
    #[arg(long, env = "LAB_JOURNAL_MODE", value_name = "MODE")]
    pub journal_mode: Option<String>,
    /// MySQL tables' engine: innodb or myisam. It belongs to the tables.
    #[arg(long, env = "LAB_MYSQL_ENGINE", value_name = "ENGINE")]
    pub mysql_engine: Option<String>,
    /// Environments to register, kind:count,... (existing names are kept).
    #[arg(long, env = "LAB_ENVIRONMENTS", value_name = "LIST")]
    pub environments: Option<String>,
}

/// The HTTP load of the original demo's script, shared by `run`, `matrix` and
/// `loadgen`.
#[derive(Debug, Clone, Args)]
pub struct HttpLoadArgs {
    /// Concurrent HTTP clients (alias CLIENTS).
    #[arg(long, env = "LAB_CLIENTS", value_name = "N")]
    pub clients: Option<String>,
    /// Build requests created per HTTP request (alias NUM).
    #[arg(long, env = "LAB_NUM", value_name = "N")]
    pub num: Option<String>,
    /// Pause between one client's requests (alias SLEEP).
    #[arg(long, env = "LAB_SLEEP", value_name = "DURATION")]
    pub sleep: Option<String>,
    /// Length of the load (alias DURATION; 30s for run, 20s per preset for
    /// matrix, 60s for loadgen).
    #[arg(long, env = "LAB_DURATION", value_name = "DURATION")]
    pub duration: Option<String>,
    /// Per-request timeout (default: busy timeout + retry deadline + 10s).
    #[arg(long, env = "LAB_REQUEST_TIMEOUT", value_name = "DURATION")]
    pub request_timeout: Option<String>,
    /// Every Nth HTTP request of each client creates requests that need
    /// {"qemux86": 2, "qemuarm": 1} (the others need the default one
    /// environment). 0, the default, is off.
    #[arg(long, env = "LAB_NEEDS_MIX", value_name = "N")]
    pub needs_mix: Option<String>,
}

/// The load and the run's shape, shared by `run` and `matrix`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    #[command(flatten)]
    pub http: HttpLoadArgs,
    /// Events in each build's stream.
    #[arg(long, env = "LAB_EVENTS_PER_BUILD", value_name = "N")]
    pub events_per_build: Option<String>,
    /// Pause between events in the ingester.
    #[arg(long, env = "LAB_EVENT_DELAY", value_name = "DURATION")]
    pub event_delay: Option<String>,
    /// Lease of builds and environments.
    #[arg(long, env = "LAB_LEASE", value_name = "DURATION")]
    pub lease: Option<String>,
    /// runbuilds' poll interval.
    #[arg(long, env = "LAB_POLL_INTERVAL", value_name = "DURATION")]
    pub poll_interval: Option<String>,
    /// Environments to register, kind:count,...
    #[arg(long, env = "LAB_ENVIRONMENTS", value_name = "LIST")]
    pub environments: Option<String>,
    /// Scheduler instances (runbuilds, runbuilds-2, ...).
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub runbuilds: u32,
    /// Longest wait for builds to finish after the load.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub drain_timeout: String,
    /// When a daemon dies during the run (killed, or exits non-zero):
    /// on-failure starts it again with its name and listen address and the
    /// run goes on; never leaves it dead. Each death is logged and listed in
    /// report.json's processes[].exits.
    #[arg(long, default_value = "on-failure", value_name = "POLICY")]
    pub restart: String,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Preset (see `locklab presets`); flags beside it override its knobs.
    #[arg(long, env = "LAB_PRESET", value_name = "NAME")]
    pub preset: Option<String>,
    #[command(flatten)]
    pub knobs: daemon::KnobArgs,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Folder for the database, logs, traces and reports (locklab's own files in
    /// it are replaced).
    #[arg(long, default_value = "locklab-run", value_name = "DIR")]
    pub out: PathBuf,
    /// Use this database instead of a fresh SQLite file in --out: an SQLite
    /// file, or a server URL (postgres://user:password@host/db,
    /// mysql://user:password@host/db), whose database is dropped and created
    /// again for the run unless it holds tables locklab does not own.
    #[arg(long, value_name = "PATH|URL")]
    pub database_url: Option<String>,
    /// Allow --database-url to name an existing locklab database (on a server:
    /// keep the database instead of recreating it).
    #[arg(long)]
    pub reuse: bool,
    /// Exit 1 on any given-up operation or check violation (for CI).
    #[arg(long)]
    pub strict: bool,
    /// Do not sample the file's locks with `locklab who` during the run (no
    /// `holders` in report.json; for measuring the sampler's own cost).
    #[arg(long)]
    pub no_who: bool,
    /// Show every column of the table (the default fits 120 columns).
    #[arg(long)]
    pub wide: bool,
    /// How the run's `locklab who` samples: getlk (default) or proc (see
    /// `locklab who --help`).
    #[arg(long, env = "LAB_WHO_PROBE", value_name = "getlk|proc")]
    pub who_probe: Option<String>,
}

#[derive(Debug, Args)]
pub struct MatrixArgs {
    /// Presets to compare, comma-separated.
    #[arg(
        long,
        default_value = "django-default,django-atomic,django-wal,immediate,robust",
        value_name = "LIST"
    )]
    pub presets: String,
    /// Runs per preset (min/median/max over them).
    #[arg(long, default_value_t = 1, value_name = "R")]
    pub repeat: u32,
    #[command(flatten)]
    pub knobs: daemon::KnobArgs,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Folder for matrix.md, matrix.json, matrix.svg and each run's folder.
    #[arg(long, default_value = "locklab-matrix", value_name = "DIR")]
    pub out: PathBuf,
    /// Which knob bought what: run FROM, then FROM with each knob where TO
    /// differs changed alone, then TO (e.g. django-default,robust). Writes
    /// ablation.md and ablation.json instead of the matrix.
    #[arg(long, value_name = "FROM,TO", conflicts_with = "presets")]
    pub ablate: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A run's out folder (or its report.json); default locklab-run, where
    /// `locklab run` writes.
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Build the table from running daemons' /api/stats instead.
    #[arg(long, num_args = 1.., value_name = "URL", conflicts_with = "dir")]
    pub live: Vec<String>,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also print each process's operations: where its failures happened, by
    /// class (from report.json's `by_op`).
    #[arg(long)]
    pub by_op: bool,
    /// Show every column of the table (the default fits 120 columns).
    #[arg(long)]
    pub wide: bool,
    /// Build the table from a folder of trace-*.jsonl files instead: your own
    /// processes' traces, as the locklab-django recorder writes them.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["dir", "live"])]
    pub traces: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The database to check.
    #[arg(long, env = "DATABASE_URL", value_name = "PATH")]
    pub database_url: String,
    /// The loadgen's JSONL log; without it the counts that need it are null.
    #[arg(long, value_name = "FILE")]
    pub loadgen_log: Option<PathBuf>,
    /// Exit 1 also when some counts could not be checked (no loadgen log).
    #[arg(long)]
    pub strict: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TimelineArgs {
    /// A run's out folder (its trace-*.jsonl files are read).
    #[arg(value_name = "DIR", required_unless_present_any = ["trace", "traces"])]
    pub dir: Option<PathBuf>,
    /// A folder of trace-*.jsonl files written by your own processes (the
    /// locklab-django recorder writes them).
    #[arg(long, value_name = "DIR", conflicts_with = "dir")]
    pub traces: Option<PathBuf>,
    /// Trace files to read instead.
    #[arg(long, num_args = 1.., value_name = "FILE")]
    pub trace: Vec<PathBuf>,
    /// Where to write the SVG (default DIR/timeline.svg).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LoadgenArgs {
    /// webui's base URL.
    #[arg(
        long,
        env = "LAB_TARGET",
        default_value = "http://127.0.0.1:8000",
        value_name = "URL"
    )]
    pub target: String,
    #[command(flatten)]
    pub http: HttpLoadArgs,
    /// A daemon's base URL for the closing table (repeatable; env: comma-separated).
    #[arg(
        long = "stats-url",
        env = "LAB_STATS_URLS",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub stats_urls: Vec<String>,
    /// Write one JSON line per request here.
    #[arg(long, env = "LAB_LOADGEN_LOG", value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Project name every request uses.
    #[arg(long, default_value = "locklab-demo", value_name = "NAME")]
    pub project: String,
    /// How long to wait for webui to answer before giving up.
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = parse_duration)]
    pub connect_timeout: Duration,
}

#[derive(Debug, Args)]
pub struct AdviseArgs {
    /// Advice for this Django version: 4.2, or 5.1 and later (5.1, 5.2).
    #[arg(long, value_name = "VERSION", conflicts_with = "rails")]
    pub django: Option<String>,
    /// Advice for Rails (8).
    #[arg(long, value_name = "VERSION")]
    pub rails: Option<String>,
    /// Also explain Toaster's patched save (shown anyway for a toaster run).
    #[arg(long)]
    pub toaster: bool,
    /// A run's folder or report.json: advise for the classes it failed with.
    /// Without it, for every lock class.
    #[arg(value_name = "REPORT")]
    pub report: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PresetsArgs {
    /// Also show what the tests assert and what else was measured, one column
    /// each (wider than 120 columns).
    #[arg(long)]
    pub long: bool,
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// URL that must answer HTTP 200.
    pub url: String,
    /// Give up after this long.
    #[arg(long, default_value = "3s")]
    pub timeout: String,
}

/// Values typed on the command line for the given ids (never clap's defaults or
/// environment values: the resolver reads the environment itself, in order).
fn flags_of(matches: &ArgMatches, ids: &[(&str, Def)]) -> Flags {
    let mut flags = Flags::new();
    for (id, d) in ids {
        // try_get_one also skips ids this subcommand does not define
        // (value_source would panic on those)
        if let Ok(Some(v)) = matches.try_get_one::<String>(id) {
            if matches.value_source(id) == Some(ValueSource::CommandLine) {
                flags.insert(d.key, v.clone());
            }
        }
    }
    flags
}

const LOAD_IDS: &[(&str, Def)] = &[
    ("clients", def::CLIENTS),
    ("num", def::NUM),
    ("sleep", def::SLEEP),
    ("duration", def::DURATION),
    ("events_per_build", def::EVENTS_PER_BUILD),
    ("event_delay", def::EVENT_DELAY),
    ("lease", def::LEASE),
    ("poll_interval", def::POLL_INTERVAL),
    ("environments", def::ENVIRONMENTS),
    ("request_timeout", def::REQUEST_TIMEOUT),
    ("needs_mix", def::NEEDS_MIX),
    ("preset", def::PRESET),
    ("journal_mode", def::JOURNAL_MODE),
    ("mysql_engine", def::MYSQL_ENGINE),
    ("database_url", def::DATABASE_URL),
];

fn count_parser(what: &'static str, max: u32) -> impl Fn(&str) -> Result<u32, String> {
    move |s: &str| {
        s.trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| format!("{s:?} is not a valid {what} (1..={max})"))
    }
}

/// The HTTP load, resolved: flag > LAB_* > the load script's CLIENTS, NUM,
/// SLEEP, DURATION > default.
struct HttpLoad {
    clients: u32,
    num: u32,
    sleep: Duration,
    duration: Duration,
    request_timeout: Duration,
    needs_mix: u32,
}

fn http_load(
    r: &Resolver<'_>,
    knobs: &Knobs,
    default_duration: Duration,
) -> anyhow::Result<HttpLoad> {
    let duration = r
        .get(def::DURATION, parse_duration, None, None, default_duration)?
        .value;
    if duration.is_zero() {
        bail!("the duration must be above 0");
    }
    let default_timeout =
        knobs.busy_timeout.value + knobs.retry_deadline.value + Duration::from_secs(10);
    Ok(HttpLoad {
        clients: r
            .get(
                def::CLIENTS,
                count_parser("client count", 256),
                None,
                None,
                4,
            )?
            .value,
        num: r
            .get(def::NUM, count_parser("NUM", 1000), None, None, 50)?
            .value,
        sleep: r
            .get(def::SLEEP, parse_duration, None, None, Duration::ZERO)?
            .value,
        duration,
        request_timeout: r
            .get(
                def::REQUEST_TIMEOUT,
                parse_duration,
                None,
                None,
                default_timeout,
            )?
            .value,
        needs_mix: r
            .get(
                def::NEEDS_MIX,
                |s: &str| {
                    s.trim()
                        .parse::<u32>()
                        .map_err(|_| format!("{s:?} is not a whole number (0 is off)"))
                },
                None,
                None,
                0,
            )?
            .value,
    })
}

/// Resolves `run`'s options (and `matrix`'s, per preset).
fn run_options(
    matches: &ArgMatches,
    load: &LoadArgs,
    out: PathBuf,
    preset_override: Option<&str>,
    default_duration: Duration,
) -> anyhow::Result<run::RunOptions> {
    let mut flags = flags_of(matches, LOAD_IDS);
    flags.extend(flags_of(matches, &daemon::knob_ids()));
    if let Some(p) = preset_override {
        flags.insert(def::PRESET.key, p.to_string());
    }
    let r = Resolver::new(&flags, &process_env);
    let knobs = r.knobs()?;
    let load_shape = http_load(&r, &knobs, default_duration)?;
    let events_per_build = r
        .get(
            def::EVENTS_PER_BUILD,
            count_parser("event count", 10_000_000),
            None,
            None,
            15_000,
        )?
        .value;
    let environments = r
        .get(
            def::ENVIRONMENTS,
            parse_environments,
            None,
            None,
            parse_environments(DEFAULT_ENVIRONMENTS).map_err(anyhow::Error::msg)?,
        )?
        .value;
    let raw = |d: Def| -> anyhow::Result<Option<String>> {
        match r.raw(d) {
            Some(v) => {
                parse_duration(&v.value).map_err(|m| anyhow::anyhow!("{}: {m}", v.source))?;
                Ok(Some(v.value))
            }
            None => Ok(None),
        }
    };
    let drain_timeout =
        parse_duration(&load.drain_timeout).map_err(|m| anyhow::anyhow!("--drain-timeout: {m}"))?;
    if load.runbuilds == 0 || load.runbuilds > 16 {
        bail!("--runbuilds must be between 1 and 16");
    }
    // Knob flags typed on the command line go to every daemon as flags.
    let knob_flags = daemon::knob_ids()
        .iter()
        .filter_map(|(id, d)| {
            (matches.value_source(id) == Some(ValueSource::CommandLine))
                .then(|| {
                    matches
                        .get_one::<String>(id)
                        .map(|v| (d.flag.to_string(), v.clone()))
                })
                .flatten()
        })
        .collect();
    Ok(run::RunOptions {
        preset: knobs.preset.value.name.to_string(),
        knob_flags,
        duration: load_shape.duration,
        clients: load_shape.clients,
        num: load_shape.num,
        sleep: load_shape.sleep,
        runbuilds: load.runbuilds,
        drain_timeout,
        out,
        // A server preset runs on its server; `run --database-url` overrides.
        database: knobs.preset.value.server_url(&process_env),
        reuse: false,
        events_per_build,
        event_delay: raw(def::EVENT_DELAY)?,
        lease: raw(def::LEASE)?,
        poll_interval: raw(def::POLL_INTERVAL)?,
        environments,
        journal_mode: knobs.journal_mode.value,
        mysql_engine: knobs.mysql_engine.value,
        request_timeout: load_shape.request_timeout,
        needs_mix: load_shape.needs_mix,
        who: Some(who::ProbeMode::Getlk),
        restart: load
            .restart
            .parse()
            .map_err(|m| anyhow::anyhow!("--restart: {m}"))?,
        faults: None,
    })
}

fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, flag.clone());
    let _ = signal_hook::flag::register(signal_hook::consts::SIGTERM, flag.clone());
    flag
}

/// Runs a parsed command line. Errors are returned for `main` to print.
pub fn run(cli: Cli, matches: &ArgMatches) -> anyhow::Result<ExitCode> {
    let sub = matches.subcommand().map(|(_, m)| m).unwrap_or(matches);
    match cli.command {
        // the args structs declare the flags; values are resolved from `sub`
        Command::Migrate(_) => cmd_migrate(sub),
        Command::Run(a) => cmd_run(&a, sub),
        Command::Matrix(a) => cmd_matrix(&a, sub),
        Command::Advise(a) => cmd_advise(&a),
        Command::Presets(a) => {
            print_presets(a.long);
            Ok(ExitCode::SUCCESS)
        }
        Command::Report(a) => cmd_report(&a),
        Command::Check(a) => cmd_check(&a),
        Command::Timeline(a) => cmd_timeline(&a),
        Command::Loadgen(a) => cmd_loadgen(&a, sub),
        Command::Probe(a) => cmd_probe(&a),
        Command::Who(a) => run_who(&a),
        Command::Hold(a) => cmd_hold(&a),
        Command::Soak(a) => cmd_soak(&a, sub),
        Command::Bench(a) => cmd_bench(&a, sub),
    }
}

fn cmd_bench(a: &BenchArgs, m: &ArgMatches) -> anyhow::Result<ExitCode> {
    let default = if a.quick {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(30)
    };
    let run = run_options(m, &a.load, a.out.join("robust"), Some("robust"), default)?;
    if run.database.is_some() {
        bail!("bench measures SQLite on this machine's disk: it takes no server preset");
    }
    let mut flags = flags_of(m, LOAD_IDS);
    flags.extend(flags_of(m, &daemon::knob_ids()));
    flags.insert(def::PRESET.key, "robust".to_string());
    let knobs = Resolver::new(&flags, &process_env).knobs()?;
    let opts = bench::BenchOptions {
        out: a.out.clone(),
        quick: a.quick,
        run,
        knobs,
    };
    let b = bench::run(&opts, &interrupt_flag())?;
    println!("{}", bench::table(&b));
    println!("wrote {}", a.out.join("bench.json").display());
    Ok(ExitCode::SUCCESS)
}

fn cmd_hold(a: &HoldArgs) -> anyhow::Result<ExitCode> {
    let hold_for = parse_duration(&a.hold_for).map_err(|m| anyhow::anyhow!("--for: {m}"))?;
    let timeout = parse_duration(&a.timeout).map_err(|m| anyhow::anyhow!("--timeout: {m}"))?;
    if DbTarget::parse(&a.database_url.to_string_lossy())
        .map_err(anyhow::Error::msg)?
        .sqlite_path()
        .is_none()
    {
        bail!(
            "hold takes an SQLite file; on a server, hold a lock with LOCK TABLE in its own client"
        );
    }
    hold::check_file(&a.database_url)?;
    let stop = interrupt_flag();
    eprintln!(
        "locklab hold: BEGIN EXCLUSIVE on {} (pid {}), waiting up to {} for the lock",
        a.database_url.display(),
        std::process::id(),
        schema::settings::fmt_duration(timeout)
    );
    let held = hold::hold_write_lock(&a.database_url, hold_for, timeout, &stop, |waited| {
        eprintln!(
            "locklab hold: holding the write lock (got it after {:.3} s) for {}",
            waited.as_secs_f64(),
            schema::settings::fmt_duration(hold_for)
        );
    })?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "waited_s": held.waited.as_secs_f64(),
                "held_s": held.held.as_secs_f64(),
            })
        );
    } else {
        println!(
            "locklab hold: got the write lock after {:.3} s, held it {:.3} s, rolled back",
            held.waited.as_secs_f64(),
            held.held.as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_soak(a: &SoakArgs, m: &ArgMatches) -> anyhow::Result<ExitCode> {
    let mut opts = run_options(
        m,
        &a.load,
        a.out.clone(),
        Some("robust"),
        Duration::from_secs(120),
    )?;
    if m.value_source("runbuilds") != Some(ValueSource::CommandLine) {
        opts.runbuilds = 2;
    }
    if opts.restart != run::Restart::OnFailure {
        bail!("soak kills daemons and needs them restarted: leave --restart at on-failure");
    }
    let seed = a.seed.unwrap_or_else(rand::random);
    opts.faults = Some(faults::FaultPlan::soak(opts.duration, seed));
    eprintln!(
        "locklab soak: {} of the robust preset with {} runbuilds, under faults (seed {seed})",
        schema::settings::fmt_duration(opts.duration),
        opts.runbuilds
    );
    let report = run::run_lab(&opts, &interrupt_flag())?;
    finish_run(&report, &a.out, false, false);
    let c = &report.check;
    let injected = report
        .faults
        .as_ref()
        .map(faults::FaultReport::summary)
        .unwrap_or_else(|| "no faults".to_string());
    let integrity = match c.integrity_ok {
        Some(true) => "ok",
        Some(false) => "FAILED",
        None => "n/a (server)",
    };
    println!(
        "soak: injected {injected}; check: lost {}, duplicated {}, double-claimed {}, \
         double-booked {}, {} violations in all; integrity {integrity}",
        c.lost.unwrap_or(c.lost_events),
        c.duplicated.unwrap_or(c.duplicated_events),
        c.double_claimed,
        c.double_booked,
        c.violations()
    );
    if c.violations() == 0 && c.integrity_ok != Some(false) {
        println!("soak: PASS");
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "soak: FAIL (see `check` in {})",
            a.out.join("report.md").display()
        );
        Ok(ExitCode::from(1))
    }
}

fn cmd_migrate(m: &ArgMatches) -> anyhow::Result<ExitCode> {
    let flags = flags_of(m, LOAD_IDS);
    let r = Resolver::new(&flags, &process_env);
    let knobs = r.knobs()?;
    let url = r
        .raw(def::DATABASE_URL)
        .map(|s| s.value)
        .or_else(|| knobs.preset.value.server_url(&process_env))
        .unwrap_or_else(|| "locklab.sqlite3".to_string());
    let target = DbTarget::parse(&url).map_err(anyhow::Error::msg)?;
    let environments = r.get(
        def::ENVIRONMENTS,
        parse_environments,
        None,
        None,
        parse_environments(DEFAULT_ENVIRONMENTS).map_err(anyhow::Error::msg)?,
    )?;
    let done = schema::migrate::migrate_with(
        &target,
        knobs.journal_mode.value,
        knobs.mysql_engine.value,
        &environments.value,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let verb = if done.created_file {
        "created"
    } else {
        "checked"
    };
    if target.sqlite_path().is_some() {
        println!(
            "locklab: {verb} {}: {} migration(s) applied, journal_mode={} ({}), environments {} added, {} in all",
            target.display(),
            done.applied.len(),
            done.journal_mode,
            knobs.journal_mode.source,
            done.environments_added,
            done.environments_total
        );
    } else {
        println!(
            "locklab: {verb} {} ({}): {} migration(s) applied, environments {} added, {} in all",
            target.display(),
            target.kind(),
            done.applied.len(),
            done.environments_added,
            done.environments_total
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn finish_run(
    report: &report::Report,
    out: &std::path::Path,
    strict: bool,
    wide: bool,
) -> ExitCode {
    println!(
        "{}",
        report::render_text_with(report, wide, report::wrap_width())
    );
    println!(
        "wrote {}, {} and {}",
        out.join("report.json").display(),
        out.join("report.md").display(),
        out.join("timeline.svg").display()
    );
    if strict {
        if let Some(why) = run::strict_failure(report) {
            eprintln!("locklab: {why}");
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}

fn cmd_run(a: &RunArgs, m: &ArgMatches) -> anyhow::Result<ExitCode> {
    let mut opts = run_options(m, &a.load, a.out.clone(), None, Duration::from_secs(30))?;
    if a.database_url.is_some() {
        opts.database = a.database_url.clone();
    }
    opts.reuse = a.reuse;
    opts.who = match a.who_probe.as_deref().map(str::trim) {
        _ if a.no_who => None,
        None | Some("") => Some(who::ProbeMode::Getlk),
        Some(p) => Some(who::ProbeMode::parse(p).map_err(|m| anyhow::anyhow!("--who-probe: {m}"))?),
    };
    let report = run::run_lab(&opts, &interrupt_flag())?;
    Ok(finish_run(&report, &a.out, a.strict, a.wide))
}

fn cmd_ablate(a: &MatrixArgs, m: &ArgMatches, pair: &str) -> anyhow::Result<ExitCode> {
    let Some((from, to)) = pair.split_once(',') else {
        bail!("--ablate takes FROM,TO, two preset names (e.g. django-default,robust)");
    };
    let (from, to) = (
        schema::settings::Preset::by_name(from).map_err(anyhow::Error::msg)?,
        schema::settings::Preset::by_name(to).map_err(anyhow::Error::msg)?,
    );
    let changes = ablate::differences(from, to);
    if changes.is_empty() {
        bail!(
            "{} and {} set the same knobs: nothing to ablate",
            from.name,
            to.name
        );
    }
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let interrupted = interrupt_flag();
    let total = changes.len() + 2;
    let mut rows = Vec::new();
    let mut step = 0;
    let mut run_one = |label: String,
                       cost: Option<String>,
                       preset: &str,
                       change: Option<&ablate::KnobChange>|
     -> anyhow::Result<()> {
        step += 1;
        let out = a.out.join(format!("{step:02}"));
        let mut opts = run_options(m, &a.load, out, Some(preset), Duration::from_secs(20))?;
        if let Some(c) = change {
            if let Some(j) = ablate::journal_of(c) {
                opts.journal_mode = j;
            }
            if c.knob == "event_delay" {
                opts.event_delay = Some(c.to.clone());
            } else {
                opts.knob_flags.push((c.flag.to_string(), c.to.clone()));
            }
        }
        eprintln!("locklab matrix --ablate: run {step}/{total}: {label}");
        let report = run::run_lab(&opts, &interrupted)?;
        rows.push(ablate::Row::of(label, cost, &report));
        if interrupted.load(std::sync::atomic::Ordering::SeqCst) {
            bail!("interrupted");
        }
        Ok(())
    };
    run_one(from.name.to_string(), None, from.name, None)?;
    for c in &changes {
        run_one(
            format!("{} + {}={}", from.name, c.knob, c.to),
            c.cost.map(str::to_string),
            from.name,
            Some(c),
        )?;
    }
    let cost = changes
        .iter()
        .filter_map(|c| c.cost)
        .next()
        .map(str::to_string);
    run_one(to.name.to_string(), cost, to.name, None)?;
    ablate::write(&a.out, from.name, to.name, &rows)?;
    println!("{}", ablate::table(&rows));
    println!(
        "wrote {} and {}",
        a.out.join("ablation.md").display(),
        a.out.join("ablation.json").display()
    );
    Ok(ExitCode::SUCCESS)
}

fn cmd_advise(a: &AdviseArgs) -> anyhow::Result<ExitCode> {
    let stack = match (&a.django, &a.rails) {
        (Some(v), _) => advise::Stack::parse_django(v).map_err(anyhow::Error::msg)?,
        (None, Some(v)) if v.trim() == "8" || v.trim().starts_with("8.") => advise::Stack::Rails8,
        (None, Some(v)) => bail!("Rails {v:?}: advice exists for Rails 8"),
        (None, None) => {
            eprintln!(
                "locklab advise: no stack given: showing Django 5.1+; pass --django 4.2 or --rails 8"
            );
            advise::Stack::Django51
        }
    };
    let all: std::collections::BTreeSet<schema::error::LockClass> = [
        schema::error::LockClass::BusyUpgrade,
        schema::error::LockClass::BusySnapshot,
        schema::error::LockClass::BusyTimeout,
    ]
    .into_iter()
    .collect();
    let (classes, toaster) = match &a.report {
        Some(p) => {
            let path = if p.is_dir() {
                p.join("report.json")
            } else {
                p.clone()
            };
            let r = report::Report::read(&path)?;
            let classes = advise::classes_of(&r);
            if classes.is_empty() {
                println!(
                    "{}: no busy_upgrade, busy_snapshot or busy_timeout in this run: nothing to advise.",
                    path.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            (classes, a.toaster || r.settings.retry == "toaster")
        }
        None => (all, a.toaster),
    };
    print!("{}", advise::render(&classes, stack, toaster));
    Ok(ExitCode::SUCCESS)
}

fn cmd_matrix(a: &MatrixArgs, m: &ArgMatches) -> anyhow::Result<ExitCode> {
    if let Some(pair) = &a.ablate {
        return cmd_ablate(a, m, pair);
    }
    let presets: Vec<String> = a
        .presets
        .split(',')
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    if presets.is_empty() {
        bail!("--presets names no preset");
    }
    for p in &presets {
        schema::settings::Preset::by_name(p).map_err(anyhow::Error::msg)?;
    }
    if a.repeat == 0 || a.repeat > 20 {
        bail!("--repeat must be between 1 and 20");
    }
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let interrupted = interrupt_flag();
    let mut runs: BTreeMap<String, Vec<report::Report>> = BTreeMap::new();
    let total = presets.len() as u32 * a.repeat;
    let mut n = 0;
    for preset in &presets {
        for i in 1..=a.repeat {
            n += 1;
            let out = a.out.join(format!("{preset}-{i}"));
            let opts = run_options(m, &a.load, out, Some(preset), Duration::from_secs(20))?;
            eprintln!("locklab matrix: run {n}/{total}: {preset} (repeat {i})");
            let report = run::run_lab(&opts, &interrupted)?;
            runs.entry(preset.clone()).or_default().push(report);
            if interrupted.load(std::sync::atomic::Ordering::SeqCst) {
                bail!("interrupted");
            }
        }
    }
    let mx = matrix::build(&presets, a.repeat, runs);
    matrix::write(&a.out, &mx)?;
    println!("{}", matrix::table(&mx));
    println!(
        "wrote {}, {} and {}",
        a.out.join("matrix.md").display(),
        a.out.join("matrix.json").display(),
        a.out.join("matrix.svg").display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `locklab presets`: the preset table with expected classes and the
/// durability note.
/// The preset table. By default it fits 120 columns: each preset's knobs in
/// one wrapped cell, and what it shows on the line below; `long` gives every
/// knob and expectation a column of its own.
pub fn presets_table(long: bool) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    let pace = |p: &schema::settings::Preset| {
        p.event_delay
            .map(schema::settings::fmt_duration)
            .unwrap_or_else(|| "the load's".to_string())
    };
    // A knob no preset sets (e.g. retry_deadline) is left out of the table.
    let shown: Vec<(usize, Def)> = PRESETS
        .first()
        .map(|p| p.knobs.describe())
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .filter(|(i, _)| PRESETS.iter().any(|p| p.knobs.describe()[*i].2))
        .map(|(i, (d, _, _))| (i, d))
        .collect();
    if long {
        let mut header = vec!["preset".to_string()];
        header.extend(shown.iter().map(|(_, d)| d.key.to_string()));
        header.extend(["event pace", "asserted by tests", "also measured"].map(str::to_string));
        t.set_header(header);
        for p in PRESETS {
            let knobs = p.knobs.describe();
            let mut row = vec![p.name.to_string()];
            row.extend(shown.iter().map(|(i, d)| {
                if knob_applies(d.key, p.backend) {
                    knobs[*i].1.clone()
                } else {
                    "–".to_string()
                }
            }));
            row.extend([pace(p), p.asserted.to_string(), p.expected.to_string()]);
            t.add_row(row);
        }
        return t;
    }
    t.set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(120)
        .set_header(vec!["preset", "knobs, and what it shows"]);
    for p in PRESETS {
        let knobs = p.knobs.describe();
        let mut text: Vec<String> = shown
            .iter()
            .filter(|(_, d)| knob_applies(d.key, p.backend))
            .map(|(i, d)| format!("{}={}", d.key, knobs[*i].1))
            .collect();
        text.push(format!("pace={}", pace(p)));
        t.add_row(vec![
            p.name.to_string(),
            format!("{}\n→ {}", text.join(" "), p.expected),
        ]);
    }
    t
}

/// Whether a knob means anything on a backend: the journal, synchronous and
/// transaction mode are SQLite's; the isolation level a server's; the engine
/// MySQL's. (A poll transaction goes stale on SQLite too: in WAL mode a read
/// transaction keeps its snapshot.)
fn knob_applies(key: &str, backend: schema::backend::Kind) -> bool {
    use schema::backend::Kind;
    match key {
        "journal_mode" | "synchronous" | "txn_mode" => backend == Kind::Sqlite,
        "isolation" => backend != Kind::Sqlite,
        "mysql_engine" => backend == Kind::Mysql,
        _ => true,
    }
}

fn print_presets(long: bool) {
    println!("{}", presets_table(long));
    let width = report::wrap_width();
    let plain = textwrap::Options::new(width);
    for text in [
        format!(
            "Durability: presets with synchronous=normal (immediate, robust): {DURABILITY_NOTE}"
        ),
        "A preset sets database and strategy knobs, never the load, with one exception: toaster \
         paces the build events (LAB_EVENT_DELAY) to Toaster's speed, about a minute per \
         15,000-event build, so that the transaction its buildinfohelper leaves open between \
         syncs spans real time. Like LAB_TXN_WORK it models the stack, and a flag or \
         LAB_EVENT_DELAY overrides it."
            .to_string(),
        "Pick one with --preset NAME or LAB_PRESET=NAME; flags and LAB_* variables beside it \
         override its knobs. --long shows what the tests assert for each."
            .to_string(),
    ] {
        println!("{}", textwrap::fill(&text, plain.clone()));
    }
}

fn live_reports(urls: &[String]) -> Vec<Result<ProcessReport, String>> {
    let agent = http::agent(Duration::from_secs(5));
    urls.iter()
        .map(|u| {
            http::get_json(&agent, &http::join(u, "/api/stats"))
                .map_err(|e| format!("{e:#}"))
                .and_then(|v| {
                    serde_json::from_value::<ProcessReport>(v).map_err(|e| format!("{u}: {e}"))
                })
        })
        .collect()
}

fn cmd_report(a: &ReportArgs) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &a.traces {
        let summaries = report::from_traces(&trace_files(dir)?)?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&summaries)?);
        } else {
            println!("{}", report::traces_table(&summaries));
            let width = report::wrap_width();
            for s in &summaries {
                if let Some(line) = &s.holders {
                    println!("{}", report::wrap_line(line, width));
                }
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !a.live.is_empty() {
        let mut processes = Vec::new();
        let mut failed = false;
        for r in live_reports(&a.live) {
            match r {
                Ok(p) => processes.push(p),
                Err(e) => {
                    eprintln!("locklab: {e}");
                    failed = true;
                }
            }
        }
        if a.json {
            println!("{}", serde_json::to_string_pretty(&processes)?);
        } else {
            println!("{}", report::process_table(&processes, a.wide));
            if a.by_op {
                for p in &processes {
                    println!("{}:\n{}", p.name, report::by_op_table(p));
                }
            }
            for p in &processes {
                for v in p.identity_violations() {
                    println!("counting identity violated: {v}");
                }
            }
        }
        return Ok(if failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        });
    }
    let dir = a
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("locklab-run"));
    let path = if dir.is_dir() {
        dir.join("report.json")
    } else {
        dir
    };
    let mut r = report::Report::read(&path)?;
    // Version 1 files have no rolled_back (read as 0); check the identities
    // again, whatever the file says.
    r.identity_violations = r.check_identities();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "{}",
            report::render_text_with(&r, a.wide, report::wrap_width())
        );
        if a.by_op {
            println!("{}", report::render_by_op(&r));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_check(a: &CheckArgs) -> anyhow::Result<ExitCode> {
    let target = DbTarget::parse(&a.database_url).map_err(anyhow::Error::msg)?;
    let log = match &a.loadgen_log {
        Some(p) => Some(check::read_log(p)?),
        None => None,
    };
    let result = check::check(&target, log.as_deref(), None)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        let c = &result.counts;
        let show = |v: Option<u64>| {
            v.map(|n| n.to_string())
                .unwrap_or_else(|| "null (needs --loadgen-log)".to_string())
        };
        let lines = [
            ("lost", show(c.lost)),
            ("duplicated", show(c.duplicated)),
            ("mismatched", c.mismatched.to_string()),
            ("double_claimed", c.double_claimed.to_string()),
            ("double_booked", c.double_booked.to_string()),
            ("leaked_bookings", c.leaked_bookings.to_string()),
            (
                "leaked_partial_bookings",
                c.leaked_partial_bookings.to_string(),
            ),
            ("partial_writes", show(c.partial_writes)),
            ("unlogged", show(c.unlogged)),
            ("misattributed", show(c.misattributed)),
            ("beyond_expected", c.beyond_expected.to_string()),
            ("stuck", c.stuck.to_string()),
            ("unconfirmed", show(c.unconfirmed)),
            ("unfinished", c.unfinished.to_string()),
            ("orphaned_builds", c.orphaned_builds.to_string()),
            ("queued_while_free", c.queued_while_free.to_string()),
            (
                "queue_wait_ms",
                result
                    .queue_wait_ms
                    .map(|w| {
                        format!(
                            "p50 {:.0} · p99 {:.0} · max {:.0} ({} requests)",
                            w.p50, w.p99, w.max, w.requests
                        )
                    })
                    .unwrap_or_else(|| "no requests".to_string()),
            ),
            (
                "integrity_ok",
                c.integrity_ok
                    .map(|ok| ok.to_string())
                    .unwrap_or_else(|| "null (a server: no integrity check to run)".to_string()),
            ),
        ];
        for (name, value) in lines {
            print!("{name}: {value}");
            if let Some(ex) = result.examples.get(name) {
                print!("  e.g. {}", ex.join("; "));
            }
            println!();
        }
        if c.lost.is_none() && c.lost_events > 0 {
            println!("(lost events, known without the log: {})", c.lost_events);
        }
        let unchecked = c.unchecked();
        if unchecked.is_empty() {
            println!("every count was checked.");
        } else {
            println!(
                "not checked (they need the loadgen's log, --loadgen-log): {}.",
                unchecked.join(", ")
            );
        }
    }
    let v = result.counts.violations();
    if v > 0 {
        eprintln!("locklab: {v} violation(s)");
        return Ok(ExitCode::from(1));
    }
    let unchecked = result.counts.unchecked();
    if a.strict && !unchecked.is_empty() {
        eprintln!(
            "locklab: --strict: {} could not be checked without --loadgen-log",
            unchecked.join(", ")
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// The trace-*.jsonl files of a folder, sorted; an error when there is none.
pub fn trace_files(dir: &std::path::Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .map(|n| {
                    n.to_string_lossy().starts_with("trace-")
                        && n.to_string_lossy().ends_with(".jsonl")
                })
                .unwrap_or(false)
        })
        .collect();
    found.sort();
    if found.is_empty() {
        bail!("no trace-*.jsonl files in {}", dir.display());
    }
    Ok(found)
}

fn cmd_timeline(a: &TimelineArgs) -> anyhow::Result<ExitCode> {
    let mut traces = a.trace.clone();
    if let Some(dir) = a.dir.as_ref().or(a.traces.as_ref()) {
        traces.extend(trace_files(dir)?);
    }
    let out = match (&a.out, a.dir.as_ref().or(a.traces.as_ref())) {
        (Some(o), _) => o.clone(),
        (None, Some(d)) => d.join("timeline.svg"),
        (None, None) => PathBuf::from("timeline.svg"),
    };
    let os = a.dir.as_deref().map(run::os_lanes).unwrap_or_default();
    // A run's report says where its load ended.
    let run_report = a
        .dir
        .as_deref()
        .and_then(|d| report::Report::read(&d.join("report.json")).ok());
    let load_end = run_report.as_ref().and_then(|r| r.load_end_us);
    let deaths = run_report
        .as_ref()
        .map(timeline::deaths_of)
        .unwrap_or_default();
    let n = timeline::write_with_os(
        &traces,
        &os,
        &out,
        "locklab · who held SQLite's write lock",
        load_end,
        &deaths,
    )?;
    println!(
        "wrote {} ({n} transactions from {} trace(s))",
        out.display(),
        traces.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn cmd_loadgen(a: &LoadgenArgs, m: &ArgMatches) -> anyhow::Result<ExitCode> {
    let flags = flags_of(m, LOAD_IDS);
    let r = Resolver::new(&flags, &process_env);
    let knobs = r.knobs()?;
    let l = http_load(&r, &knobs, Duration::from_secs(60))?;
    let spec = loadgen::LoadSpec {
        target: a.target.clone(),
        clients: l.clients,
        num: l.num,
        sleep: l.sleep,
        duration: l.duration,
        request_timeout: l.request_timeout,
        needs_mix: l.needs_mix,
        project: a.project.clone(),
        log: a.log.clone(),
    };
    let urls: Vec<String> = if a.stats_urls.iter().any(|u| !u.trim().is_empty()) {
        a.stats_urls
            .iter()
            .filter(|u| !u.trim().is_empty())
            .cloned()
            .collect()
    } else {
        vec![
            "http://127.0.0.1:8000".to_string(),
            "http://127.0.0.1:8001".to_string(),
            "http://127.0.0.1:8002".to_string(),
        ]
    };
    let agent = http::agent(Duration::from_secs(2));
    http::wait_healthy_verbose(
        &agent,
        &http::join(&spec.target, "/healthz"),
        a.connect_timeout,
        "webui",
    )?;
    eprintln!(
        "loadgen: {} clients × NUM {} against {} for {}",
        spec.clients,
        spec.num,
        spec.target,
        schema::settings::fmt_duration(spec.duration)
    );
    let interrupted = interrupt_flag();
    let load = loadgen::Load::start(&spec)?;
    let mut last = std::time::Instant::now();
    while load.started.elapsed() < spec.duration
        && !interrupted.load(std::sync::atomic::Ordering::SeqCst)
    {
        std::thread::sleep(Duration::from_millis(200));
        if last.elapsed() >= Duration::from_secs(10) {
            last = std::time::Instant::now();
            eprintln!(
                "loadgen: {:.0}s: {} requests, {} ok",
                load.started.elapsed().as_secs_f64(),
                load.state
                    .requests
                    .load(std::sync::atomic::Ordering::Relaxed),
                load.state.ok.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
    }
    load.state
        .stop
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (summary, _) = load.finish()?;
    let mut processes = Vec::new();
    let mut missing = Vec::new();
    for (u, r) in urls.iter().zip(live_reports(&urls)) {
        match r {
            Ok(p) => processes.push(p),
            Err(e) => missing.push(format!("{u}: {e}")),
        }
    }
    for m in &missing {
        eprintln!("loadgen: no stats from {m}");
    }
    println!("{}", report::loadgen_line(&summary));
    use std::io::Write;
    let _ = std::io::stderr().flush();
    println!("{}", report::process_table(&processes, false));
    Ok(ExitCode::SUCCESS)
}

/// `locklab who FILE`: samples the file's locks until --duration or Ctrl-C.
fn run_who(a: &who::cli::WhoArgs) -> anyhow::Result<ExitCode> {
    who::cli::run(a, &interrupt_flag())
}

fn cmd_probe(a: &ProbeArgs) -> anyhow::Result<ExitCode> {
    let timeout = parse_duration(&a.timeout).map_err(|m| anyhow::anyhow!("--timeout: {m}"))?;
    let agent = http::agent(timeout);
    match agent.get(&a.url).call() {
        Ok(r) if r.status().as_u16() == 200 => Ok(ExitCode::SUCCESS),
        Ok(r) => {
            eprintln!("probe: {} answered HTTP {}", a.url, r.status().as_u16());
            Ok(ExitCode::from(1))
        }
        Err(e) => {
            eprintln!("probe: {}: {e}", a.url);
            Ok(ExitCode::from(1))
        }
    }
}
