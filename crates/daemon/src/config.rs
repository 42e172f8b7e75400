//! Settings shared by every daemon, and the startup sequence.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use schema::db::{build_pool, DbTarget, Pool};
use schema::migrate::startup_check;
use schema::settings::{
    def, fmt_duration, parse_duration, process_env, Def, Env, Flags, Knobs, ReportSettings,
    Resolver, Source, Sourced, KNOBS,
};
use schema::trace::Trace;
use schema::Lab;

/// Settings every daemon takes. Each is a flag and an environment variable; an
/// empty variable counts as unset.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// The database: an SQLite file, or a server URL (postgres://user:password@host/db,
    /// mysql://…); it must exist and be migrated (`locklab migrate`). Default: a server
    /// preset's server (LAB_POSTGRES_URL / LAB_MYSQL_URL, else local), else locklab.sqlite3.
    #[arg(long, env = "DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// A whole set of knobs at once; see `locklab presets`. Default django-default.
    #[arg(long, env = "LAB_PRESET", value_name = "NAME")]
    pub preset: Option<String>,
    /// Address to serve /healthz, /metrics, /api/stats and /drain on. Port 0 picks
    /// a free port (logged as `listening on ADDR`).
    #[arg(long, env = "LAB_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// This process's name in logs, stats and the database (e.g. runbuilds-2).
    #[arg(long, env = "LAB_PROCESS_NAME", value_name = "NAME")]
    pub name: Option<String>,
    /// Lease length: how long a build or environment stays owned without renewal.
    #[arg(long, env = "LAB_LEASE", value_name = "DURATION")]
    pub lease: Option<String>,
    /// Write the final stats JSON here (also refreshed at every summary).
    #[arg(long, env = "LAB_STATS_OUT", value_name = "FILE")]
    pub stats_out: Option<String>,
    /// Write a JSONL lock trace here (one line per write-transaction attempt).
    #[arg(long, env = "LAB_TRACE_OUT", value_name = "FILE")]
    pub trace_out: Option<String>,
    /// How often to log the one-line summary.
    #[arg(long, env = "LAB_STATS_INTERVAL", value_name = "DURATION")]
    pub stats_interval: Option<String>,
    /// runbuilds' pidfile (default `.NAME.pid` beside the database): runbuilds
    /// writes it; webui and buildinfohelper read it to send SIGUSR1 under
    /// LAB_WAKE=notify.
    #[arg(long, env = "LAB_PIDFILE", value_name = "FILE")]
    pub pidfile: Option<String>,
    /// Where to POST /wake when runbuilds cannot be signalled (another PID
    /// namespace, e.g. compose): comma-separated base URLs of runbuilds.
    #[arg(long = "wake-url", env = "LAB_WAKE_URLS", value_name = "URLS")]
    pub wake_urls: Option<String>,
    #[command(flatten)]
    pub knobs: KnobArgs,
}

/// The database and strategy knobs (the ones a preset sets), as flags: one per
/// entry of [`schema::settings::KNOBS`], where each is declared with its help.
/// `locklab run` takes the same flags and passes the ones you typed on to the
/// daemons. The values stay in clap's matches; [`flags_from_matches`] reads
/// the ones typed on the command line.
#[derive(Debug, Clone, Default)]
pub struct KnobArgs;

impl clap::FromArgMatches for KnobArgs {
    fn from_arg_matches(_: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(KnobArgs)
    }
    fn update_from_arg_matches(&mut self, _: &ArgMatches) -> Result<(), clap::Error> {
        Ok(())
    }
}

impl Args for KnobArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        KNOBS.iter().fold(cmd, |cmd, k| {
            let help = k.help.trim();
            let short = help.split(". ").next().unwrap_or(help);
            cmd.arg(
                clap::Arg::new(k.def.key)
                    .long(k.def.flag.trim_start_matches('-'))
                    .env(k.def.env)
                    .value_name(k.value_name)
                    .help(short.trim_end_matches('.').to_string() + ".")
                    .long_help(help.to_string()),
            )
        })
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// The keys of [`CommonArgs`] in clap's matches, with their setting keys.
const COMMON_IDS: &[(&str, Def)] = &[
    ("database_url", def::DATABASE_URL),
    ("preset", def::PRESET),
    ("listen", def::LISTEN),
    ("name", def::PROCESS_NAME),
    ("lease", def::LEASE),
    ("stats_out", def::STATS_OUT),
    ("trace_out", def::TRACE_OUT),
    ("stats_interval", def::STATS_INTERVAL),
    ("pidfile", def::PIDFILE),
    ("wake_urls", def::WAKE_URLS),
];

/// The ids of [`KnobArgs`] in clap's matches (each knob's key), with their settings.
pub fn knob_ids() -> Vec<(&'static str, Def)> {
    KNOBS.iter().map(|k| (k.def.key, k.def)).collect()
}

/// The values the user typed on the command line (not clap defaults, not values
/// clap read from the environment: the resolver reads the environment itself,
/// so that it can apply the demo's aliases and presets in order).
pub fn flags_from_matches(matches: &ArgMatches, extra: &[(&str, Def)]) -> Flags {
    let mut flags = Flags::new();
    for (id, d) in COMMON_IDS.iter().chain(&knob_ids()).chain(extra) {
        if matches.value_source(id) == Some(ValueSource::CommandLine) {
            if let Some(v) = matches.get_one::<String>(id) {
                flags.insert(d.key, v.clone());
            }
        }
    }
    flags
}

/// The resolved settings of one daemon.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database: Sourced<DbTarget>,
    pub listen: Sourced<String>,
    pub name: Sourced<String>,
    pub lease: Sourced<Duration>,
    pub stats_out: Option<Sourced<PathBuf>>,
    pub trace_out: Option<Sourced<PathBuf>>,
    pub stats_interval: Sourced<Duration>,
    /// runbuilds' pidfile, if set (else the default beside the database).
    pub pidfile: Option<Sourced<PathBuf>>,
    /// runbuilds' base URLs for POST /wake.
    pub wake_urls: Vec<String>,
    pub knobs: Knobs,
}

/// A daemon's fixed defaults.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub name: &'static str,
    pub listen: &'static str,
}

impl Settings {
    pub fn resolve(flags: &Flags, env: Env<'_>, defaults: Defaults) -> anyhow::Result<Settings> {
        let r = Resolver::new(flags, env);
        let text = |d: Def, default: &str| -> Sourced<String> {
            r.raw(d)
                .unwrap_or_else(|| Sourced::new(default.to_string(), Source::Default))
        };
        // No DATABASE_URL: a server preset's server, else locklab.sqlite3.
        let database = match r.raw(def::DATABASE_URL) {
            Some(d) => d,
            None => match r.preset()?.value.server_url(env) {
                Some(url) => Sourced::new(url, Source::Preset(r.preset()?.value.name)),
                None => Sourced::new("locklab.sqlite3".to_string(), Source::Default),
            },
        };
        let target = DbTarget::parse(&database.value).map_err(anyhow::Error::msg)?;
        let path = |d: Def| {
            r.raw(d)
                .map(|s| Sourced::new(PathBuf::from(s.value), s.source))
        };
        let listen = text(def::LISTEN, defaults.listen);
        listen.value.parse::<SocketAddr>().with_context(|| {
            format!(
                "{} {:?} is not an address like 127.0.0.1:8000",
                listen.source, listen.value
            )
        })?;
        let name = text(def::PROCESS_NAME, defaults.name);
        if name.value.trim().is_empty()
            || name
                .value
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            bail!(
                "process name {:?} must be one word (e.g. runbuilds-2)",
                name.value
            );
        }
        let lease = r.get(
            def::LEASE,
            parse_duration,
            None,
            None,
            Duration::from_secs(10),
        )?;
        if lease.value < Duration::from_millis(100) {
            bail!("{}: the lease must be at least 100ms", lease.source);
        }
        let stats_interval = r.get(
            def::STATS_INTERVAL,
            parse_duration,
            None,
            None,
            Duration::from_secs(5),
        )?;
        if stats_interval.value.is_zero() {
            bail!(
                "{}: the summary interval must be above 0",
                stats_interval.source
            );
        }
        let wake_urls = r
            .raw(def::WAKE_URLS)
            .map(|s| {
                s.value
                    .split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Settings {
            database: Sourced::new(target, database.source),
            listen,
            name,
            lease,
            stats_out: path(def::STATS_OUT),
            trace_out: path(def::TRACE_OUT),
            stats_interval,
            pidfile: path(def::PIDFILE),
            wake_urls,
            knobs: r.knobs()?,
        })
    }

    /// runbuilds' pidfile: the setting, or `.NAME.pid` beside the database.
    pub fn pidfile_for(&self, name: &str) -> PathBuf {
        self.pidfile
            .as_ref()
            .map(|p| p.value.clone())
            .unwrap_or_else(|| crate::wake::default_pidfile(self.database.value.side_dir(), name))
    }
}

/// Why a daemon wakes runbuilds ([`Daemon::notify_runbuilds`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WakeWhy {
    /// webui queued a request (Toaster wakes runbuilds after each create).
    Created,
    /// buildinfohelper ended a build and freed its environments.
    BuildEnded,
}

/// A started daemon: its settings, pool and counters.
pub struct Daemon {
    pub settings: Settings,
    pub pool: Pool,
    pub lab: Lab,
    /// The report's settings object, with the file's real journal mode.
    pub report_settings: ReportSettings,
    /// Set by POST /drain.
    pub draining: Arc<AtomicBool>,
    /// Wakes runbuilds under LAB_WAKE=notify (None under poll).
    pub notifier: crate::wake::Notifier,
    /// A daemon whose work loop must confirm the drain (runbuilds: no claim
    /// in flight) sets this; it then reports `drained` only once its loop
    /// saw the drain.
    pub acks_drain: AtomicBool,
    pub drain_seen: AtomicBool,
}

impl Daemon {
    /// Checks the database read-only (refusing a missing, empty, foreign,
    /// unmigrated or non-database file), opens the pool, and logs every effective
    /// setting with its source.
    pub fn start(settings: Settings, pool_size: u32) -> anyhow::Result<Daemon> {
        let name = settings.name.value.clone();
        let target = &settings.database.value;
        // A write past RLIMIT_FSIZE (a file size limit, as a full disk would
        // be) then fails with EFBIG, which SQLite returns as an I/O error,
        // instead of SIGXFSZ killing the process.
        // SAFETY: setting a signal's disposition to SIG_IGN has no handler to
        // run and no memory to share.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        }
        // Writable first: SQLite opens a file it may not write read-only, and
        // then fails later with a less clear error.
        if let Some(file) = target.sqlite_path().filter(|f| f.exists()) {
            check_writable(file)?;
        }
        startup_check(target).map_err(|e| anyhow::anyhow!("{e}"))?;
        // The process's retry policy (LAB_RETRY, LAB_RETRY_DEADLINE): every
        // operation of this daemon retries as it says.
        let lab = Lab::new(name.clone()).with_retry(
            settings.knobs.retry.value,
            settings.knobs.retry_deadline.value,
        );
        lab.stats
            .set_busy_timeout(settings.knobs.busy_timeout.value);
        // The busy handlers of this process give up when it stops.
        let policy = schema::db::Policy {
            stop: lab.stop_flag(),
            ..settings.knobs.policy()
        };
        // Detached: it ends with the stop flag, or with the process.
        schema::db::start_checkpointer(&name, target, &policy)
            .context("starting the checkpointer thread")?;
        let pool = build_pool(target, policy, pool_size).map_err(anyhow::Error::msg)?;
        let mut conn = pool.get().context("opening a first connection")?;
        let (journal, synchronous) =
            schema::migrate::read_file_modes(&mut conn).context("reading the journal mode back")?;
        let busy_timeout = conn.busy_timeout();
        lab.stats.set_lock_wait_measured(conn.lock_wait_measured());
        let engines = if target.kind() == schema::backend::Kind::Mysql {
            schema::migrate::mysql_table_engines(conn.diesel())
                .context("reading the tables' storage engines")?
        } else {
            Vec::new()
        };
        drop(conn);
        for (table, engine) in engines
            .iter()
            .filter(|(_, e)| !e.eq_ignore_ascii_case("InnoDB"))
        {
            log::warn!(
                "{name}: warning: table {table} is {engine}, not transactional: BEGIN and ROLLBACK \
                 are accepted and ignored (MySQL says so only in warning 1196); \
                 LAB_MYSQL_ENGINE=innodb with a fresh database cures it"
            );
        }

        log::info!(
            "{name}: setting database={} backend={} source={}",
            target.display(),
            target.kind(),
            settings.database.source
        );
        log::info!(
            "{name}: setting listen={} source={}",
            settings.listen.value,
            settings.listen.source
        );
        log::info!(
            "{name}: setting name={name} source={}",
            settings.name.source
        );
        log::info!(
            "{name}: setting lease={} source={}",
            fmt_duration(settings.lease.value),
            settings.lease.source
        );
        for (key, value, source) in settings.knobs.describe() {
            match key {
                "journal_mode" => {
                    log::info!(
                        "{name}: setting journal_mode={journal} source={}",
                        Source::File
                    );
                    let wanted = settings.knobs.journal_mode.value;
                    if target.sqlite_path().is_some()
                        && journal != wanted.as_str()
                        && source != Source::Default
                    {
                        log::warn!(
                            "{name}: the file is in journal_mode={journal} but {source} asks for {wanted}; \
                             the journal mode belongs to the file: run `locklab migrate` with it to change it"
                        );
                    }
                }
                "busy_timeout" => {
                    // from the busy handler's own state, not from a PRAGMA
                    log::info!(
                        "{name}: setting busy_timeout={} source={source}",
                        fmt_duration(busy_timeout)
                    );
                }
                "synchronous" => {
                    log::info!("{name}: setting synchronous={synchronous} source={source}");
                }
                _ => log::info!("{name}: setting {key}={value} source={source}"),
            }
        }
        if let Some(out) = &settings.stats_out {
            log::info!(
                "{name}: setting stats_out={} source={}",
                out.value.display(),
                out.source
            );
        }
        let trace = match &settings.trace_out {
            Some(out) => {
                log::info!(
                    "{name}: setting trace_out={} source={}",
                    out.value.display(),
                    out.source
                );
                Some(Arc::new(
                    Trace::create(&out.value, name.clone()).with_context(|| {
                        format!("creating the trace file {}", out.value.display())
                    })?,
                ))
            }
            None => None,
        };
        if let Some(p) = &settings.pidfile {
            log::info!(
                "{name}: setting pidfile={} source={}",
                p.value.display(),
                p.source
            );
        }
        if !settings.wake_urls.is_empty() {
            log::info!(
                "{name}: setting wake_urls={} source=env(LAB_WAKE_URLS)",
                settings.wake_urls.join(",")
            );
        }
        // Both wake modes notify at the end of a build (see [`WakeWhy`]).
        let notifier = crate::wake::Notifier::new(
            &name,
            target.side_dir(),
            settings.pidfile.as_ref().map(|p| p.value.clone()),
            settings.wake_urls.clone(),
        );
        let report_settings = ReportSettings::from_knobs(&settings.knobs, &journal, &synchronous);
        Ok(Daemon {
            lab: lab.with_trace(trace),
            settings,
            pool,
            report_settings,
            draining: Arc::new(AtomicBool::new(false)),
            notifier,
            acks_drain: AtomicBool::new(false),
            drain_seen: AtomicBool::new(false),
        })
    }

    pub fn name(&self) -> &str {
        &self.lab.process
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Whether the drain has taken hold: draining, and (for a daemon that
    /// confirms it) its work loop saw the drain with nothing in flight.
    pub fn is_drained(&self) -> bool {
        self.is_draining()
            && (!self.acks_drain.load(Ordering::SeqCst) || self.drain_seen.load(Ordering::SeqCst))
    }

    /// Called by a work loop between passes: if draining, nothing this
    /// process started before the drain is still in flight.
    pub fn confirm_drain(&self) {
        if self.is_draining() {
            self.drain_seen.store(true, Ordering::SeqCst);
        }
    }

    /// Wakes runbuilds for `why`, if the wake mode does: under `notify`
    /// always (Toaster's `signal_runbuilds()`), under `poll` only when a
    /// build ended, which frees its environments: the next request need not
    /// wait for the poll interval.
    pub fn notify_runbuilds(&self, why: WakeWhy) {
        let wanted = match self.settings.knobs.wake.value {
            schema::settings::WakeMode::Notify => true,
            schema::settings::WakeMode::Poll => why == WakeWhy::BuildEnded,
        };
        if wanted {
            self.notifier.notify();
        }
    }

    /// The `/api/stats` body: one `processes[]` entry plus `settings`.
    pub fn stats_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self.lab.stats.snapshot()).unwrap_or_default();
        if let Some(obj) = v.as_object_mut() {
            obj.insert(
                "settings".to_string(),
                serde_json::to_value(&self.report_settings).unwrap_or_default(),
            );
            obj.insert(
                "draining".to_string(),
                serde_json::Value::Bool(self.is_draining()),
            );
            obj.insert(
                "drained".to_string(),
                serde_json::Value::Bool(self.is_drained()),
            );
        }
        v
    }
}

/// Reads settings from the process's command line and environment.
pub fn settings_from(
    matches: &ArgMatches,
    extra: &[(&str, Def)],
    defaults: Defaults,
) -> anyhow::Result<Settings> {
    Settings::resolve(&flags_from_matches(matches, extra), &process_env, defaults)
}

/// Every daemon writes, and SQLite creates its journal (`-journal`, or `-wal`
/// and `-shm`) beside the file: a file or directory this user cannot write is
/// refused here, in one line, rather than as a 503 at the first write.
fn check_writable(file: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    for (what, path) in [("the file", file), ("its directory", dir)] {
        let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
            continue;
        };
        // SAFETY: a NUL-terminated path; access(2) only reads it.
        if unsafe { libc::access(c.as_ptr(), libc::W_OK) } != 0 {
            let err = std::io::Error::last_os_error();
            // SAFETY: getuid has no preconditions.
            let uid = unsafe { libc::getuid() };
            anyhow::bail!(
                "{}: {what} {} is not writable by uid {uid} ({err}); every daemon writes, and SQLite \
                 creates its journal (-journal, or -wal and -shm) in the directory: fix the permissions",
                file.display(),
                path.display()
            );
        }
    }
    Ok(())
}

/// Logging: `RUST_LOG` (default info); a timestamp, the level, then the
/// message, which starts with the process name.
pub fn init_logging() {
    use std::io::Write;
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|buf, record| {
            let ts = buf.timestamp_millis();
            writeln!(buf, "{ts} {:<5} {}", record.level(), record.args())
        })
        .try_init();
}
