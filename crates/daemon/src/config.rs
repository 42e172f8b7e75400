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
    Resolver, Source, Sourced,
};
use schema::trace::Trace;
use schema::Lab;

/// Settings every daemon takes. Each is a flag and an environment variable; an
/// empty variable counts as unset.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// SQLite database file (must exist: create it with `locklab migrate`).
    #[arg(long, env = "DATABASE_URL", value_name = "PATH")]
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

/// The database and strategy knobs (the ones a preset sets). `locklab run`
/// takes the same flags and passes the ones you typed on to the daemons.
#[derive(Debug, Clone, Default, Args)]
pub struct KnobArgs {
    /// Journal mode you expect (delete or wal; alias WAL=true/false). The file's
    /// mode wins: it is set by `locklab migrate`; a daemon only warns.
    #[arg(long, env = "LAB_JOURNAL_MODE", value_name = "MODE")]
    pub journal_mode: Option<String>,
    /// Busy timeout of the lab's busy handler (alias TIMEOUT, in seconds as in Django).
    #[arg(long, env = "LAB_BUSY_TIMEOUT", value_name = "DURATION")]
    pub busy_timeout: Option<String>,
    /// PRAGMA synchronous: full, normal or off.
    #[arg(long, env = "LAB_SYNCHRONOUS", value_name = "MODE")]
    pub synchronous: Option<String>,
    /// How write transactions begin: deferred or immediate.
    #[arg(long, env = "LAB_TXN_MODE", value_name = "MODE")]
    pub txn_mode: Option<String>,
    /// One transaction per HTTP request, as Django's ATOMIC_REQUESTS (alias
    /// ATOMIC_REQUESTS). Used by webui.
    #[arg(long, env = "LAB_ATOMIC_REQUESTS", value_name = "BOOL")]
    pub atomic_requests: Option<String>,
    /// After a failed attempt: none, toaster (forever, 0.5 s apart) or backoff.
    #[arg(long, env = "LAB_RETRY", value_name = "POLICY")]
    pub retry: Option<String>,
    /// How long `backoff` keeps trying one operation.
    #[arg(long, env = "LAB_RETRY_DEADLINE", value_name = "DURATION")]
    pub retry_deadline: Option<String>,
    /// How runbuilds claims: toaster, single or guarded.
    #[arg(long, env = "LAB_CLAIM", value_name = "STRATEGY")]
    pub claim: Option<String>,
    /// How buildinfohelper commits: per-event, every-3-tasks or batch:N.
    #[arg(long, env = "LAB_COMMIT", value_name = "POLICY")]
    pub commit: Option<String>,
    /// App work inside each write transaction, modelling a slower stack.
    #[arg(long, env = "LAB_TXN_WORK", value_name = "DURATION")]
    pub txn_work: Option<String>,
    /// What makes runbuilds schedule: poll (every poll interval) or notify
    /// (only when webui or buildinfohelper wake it, as Toaster does).
    #[arg(long, env = "LAB_WAKE", value_name = "MODE")]
    pub wake: Option<String>,
    /// How webui creates a request: lab (the demo's view) or toaster (Build
    /// row, request, child rows, each its own transaction).
    #[arg(long, env = "LAB_CREATE_SHAPE", value_name = "SHAPE")]
    pub create_shape: Option<String>,
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

/// The ids of [`KnobArgs`] in clap's matches, with their settings.
pub const KNOB_IDS: &[(&str, Def)] = &[
    ("journal_mode", def::JOURNAL_MODE),
    ("busy_timeout", def::BUSY_TIMEOUT),
    ("synchronous", def::SYNCHRONOUS),
    ("txn_mode", def::TXN_MODE),
    ("atomic_requests", def::ATOMIC_REQUESTS),
    ("retry", def::RETRY),
    ("retry_deadline", def::RETRY_DEADLINE),
    ("claim", def::CLAIM),
    ("commit", def::COMMIT),
    ("txn_work", def::TXN_WORK),
    ("wake", def::WAKE),
    ("create_shape", def::CREATE_SHAPE),
];

/// The values the user typed on the command line (not clap defaults, not values
/// clap read from the environment: the resolver reads the environment itself,
/// so that it can apply the demo's aliases and presets in order).
pub fn flags_from_matches(matches: &ArgMatches, extra: &[(&str, Def)]) -> Flags {
    let mut flags = Flags::new();
    for (id, d) in COMMON_IDS.iter().chain(KNOB_IDS).chain(extra) {
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
        let database = text(def::DATABASE_URL, "locklab.sqlite3");
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
    pub notifier: Option<crate::wake::Notifier>,
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
        startup_check(target).map_err(|e| anyhow::anyhow!("{e}"))?;
        let lab = Lab::new(name.clone());
        lab.stats
            .set_busy_timeout(settings.knobs.busy_timeout.value);
        // The busy handlers of this process give up when it stops.
        let policy = schema::db::Policy {
            stop: lab.stop_flag(),
            ..settings.knobs.policy()
        };
        let pool = build_pool(target, policy, pool_size).map_err(anyhow::Error::msg)?;
        let mut conn = pool.get().context("opening a first connection")?;
        let (journal, synchronous) =
            schema::migrate::read_file_modes(&mut conn).context("reading the journal mode back")?;
        let busy_timeout = conn.busy_timeout();
        lab.stats.set_lock_wait_measured(conn.lock_wait_measured());
        drop(conn);

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
        let notifier =
            (settings.knobs.wake.value == schema::settings::WakeMode::Notify).then(|| {
                crate::wake::Notifier::new(
                    &name,
                    target.side_dir(),
                    settings.pidfile.as_ref().map(|p| p.value.clone()),
                    settings.wake_urls.clone(),
                )
            });
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

    /// Wakes runbuilds if the wake mode is `notify`.
    pub fn notify_runbuilds(&self) {
        if let Some(n) = &self.notifier {
            n.notify();
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
