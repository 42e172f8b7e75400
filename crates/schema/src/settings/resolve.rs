//! Resolution by precedence: flag > LAB_* > the demo's alias > preset > default; the resolved knobs and the report's settings object.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::*;

// ---------------------------------------------------------------------------
// Resolution
// ---------------------------------------------------------------------------

/// One setting's names.
#[derive(Debug, Clone, Copy)]
pub struct Def {
    /// The key in logs and in [`Flags`]: `busy_timeout`.
    pub key: &'static str,
    /// The long flag: `--busy-timeout`.
    pub flag: &'static str,
    /// The `LAB_*` (or standard) variable.
    pub env: &'static str,
    /// The original demo's short name, if any.
    pub alias: Option<&'static str>,
}

macro_rules! defs {
    ($($id:ident = $key:literal, $flag:literal, $env:literal, $alias:expr;)+) => {
        /// The names of every setting. The knobs' are declared with the knobs
        /// (`knobs.rs`) and re-exported here.
        pub mod def {
            use super::Def;
            pub use super::knob_def::*;
            $(pub const $id: Def = Def { key: $key, flag: $flag, env: $env, alias: $alias };)+
            /// The settings that are not knobs; [`all`] adds the knobs.
            pub const OTHERS: &[Def] = &[$($id),+];
            /// Every setting's names.
            pub fn all() -> impl Iterator<Item = Def> {
                OTHERS.iter().copied().chain(super::KNOBS.iter().map(|k| k.def))
            }
        }
    };
}

defs! {
    DATABASE_URL = "database_url", "--database-url", "DATABASE_URL", None;
    PRESET = "preset", "--preset", "LAB_PRESET", None;
    LISTEN = "listen", "--listen", "LAB_LISTEN", None;
    PROCESS_NAME = "name", "--name", "LAB_PROCESS_NAME", None;
    LEASE = "lease", "--lease", "LAB_LEASE", None;
    STATS_OUT = "stats_out", "--stats-out", "LAB_STATS_OUT", None;
    TRACE_OUT = "trace_out", "--trace-out", "LAB_TRACE_OUT", None;
    STATS_INTERVAL = "stats_interval", "--stats-interval", "LAB_STATS_INTERVAL", None;
    ENVIRONMENTS = "environments", "--environments", "LAB_ENVIRONMENTS", None;
    EVENTS_PER_BUILD = "events_per_build", "--events-per-build", "LAB_EVENTS_PER_BUILD", None;
    EVENT_DELAY = "event_delay", "--event-delay", "LAB_EVENT_DELAY", None;
    POLL_INTERVAL = "poll_interval", "--poll-interval", "LAB_POLL_INTERVAL", None;
    WAKE_PASSES = "wake_passes", "--wake-passes", "LAB_WAKE_PASSES", None;
    WAKE_URLS = "wake_urls", "--wake-url", "LAB_WAKE_URLS", None;
    PIDFILE = "pidfile", "--pidfile", "LAB_PIDFILE", None;
    CLIENTS = "clients", "--clients", "LAB_CLIENTS", Some("CLIENTS");
    NUM = "num", "--num", "LAB_NUM", Some("NUM");
    SLEEP = "sleep", "--sleep", "LAB_SLEEP", Some("SLEEP");
    DURATION = "duration", "--duration", "LAB_DURATION", Some("DURATION");
    STATS_URLS = "stats_urls", "--stats-url", "LAB_STATS_URLS", None;
    REQUEST_TIMEOUT = "request_timeout", "--request-timeout", "LAB_REQUEST_TIMEOUT", None;
    NEEDS_MIX = "needs_mix", "--needs-mix", "LAB_NEEDS_MIX", None;
}

/// Values given on the command line, by setting key. Only flags the user really
/// typed belong here (clap's `ValueSource::CommandLine`), never clap defaults or
/// values clap read from the environment.
pub type Flags = BTreeMap<&'static str, String>;

/// A parser of a setting's text.
pub type Parser<'a, T> = &'a dyn Fn(&str) -> Result<T, String>;

/// Reads settings by precedence from flags, the environment and a preset.
pub struct Resolver<'a> {
    flags: &'a Flags,
    env: Env<'a>,
}

impl<'a> Resolver<'a> {
    pub fn new(flags: &'a Flags, env: Env<'a>) -> Self {
        Resolver { flags, env }
    }

    fn env_value(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|v| !v.trim().is_empty())
    }

    /// The first of flag, `LAB_*` variable and alias that is set, as raw text.
    pub fn raw(&self, d: Def) -> Option<Sourced<String>> {
        if let Some(v) = self.flags.get(d.key).filter(|v| !v.trim().is_empty()) {
            return Some(Sourced::new(v.clone(), Source::Flag(d.flag)));
        }
        if let Some(v) = self.env_value(d.env) {
            return Some(Sourced::new(v, Source::Env(d.env)));
        }
        if let Some(alias) = d.alias {
            if let Some(v) = self.env_value(alias) {
                return Some(Sourced::new(v, Source::Alias(alias)));
            }
        }
        None
    }

    /// Resolves a setting: flag > env > alias > preset > default. `parse` turns
    /// the raw text into the value; `alias_parse` is used for the alias instead,
    /// when the demo's variable has another type (`WAL=True` is a boolean).
    pub fn get<T>(
        &self,
        d: Def,
        parse: impl Fn(&str) -> Result<T, String>,
        alias_parse: Option<Parser<'_, T>>,
        preset: Option<(&'static str, T)>,
        default: T,
    ) -> Result<Sourced<T>, SettingError> {
        match self.raw(d) {
            Some(raw) => {
                let parsed = match (&raw.source, alias_parse) {
                    (Source::Alias(_), Some(alias_parse)) => alias_parse(&raw.value),
                    _ => parse(&raw.value),
                };
                parsed
                    .map(|v| Sourced::new(v, raw.source.clone()))
                    .map_err(|message| SettingError {
                        source_name: match raw.source {
                            Source::Flag(f) => f.to_string(),
                            Source::Env(n) | Source::Alias(n) => n.to_string(),
                            _ => d.key.to_string(),
                        },
                        message,
                    })
            }
            None => Ok(match preset {
                Some((name, v)) => Sourced::new(v, Source::Preset(name)),
                None => Sourced::new(default, Source::Default),
            }),
        }
    }

    /// The preset: flag > `LAB_PRESET` > django-default.
    pub fn preset(&self) -> Result<Sourced<&'static Preset>, SettingError> {
        self.get(
            def::PRESET,
            Preset::by_name,
            None,
            None,
            // DEFAULT_PRESET is in PRESETS; the fallback keeps this total.
            Preset::by_name(DEFAULT_PRESET).unwrap_or(&PRESETS[0]),
        )
    }

    /// How many passes one notification runs: `LAB_WAKE_PASSES`, default 7
    /// under `notify` (Toaster's quirk: it runs its pass once per field of the
    /// `struct_siginfo` that `sigtimedwait` returns, and that has 7 fields),
    /// else 1.
    pub fn wake_passes(&self, wake: WakeMode) -> Result<Sourced<u32>, SettingError> {
        let default = match wake {
            WakeMode::Notify => TOASTER_WAKE_PASSES,
            WakeMode::Poll => 1,
        };
        self.get(
            def::WAKE_PASSES,
            |s| {
                s.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| format!("{s:?} is not a number of passes between 1 and 1000"))
            },
            None,
            None,
            default,
        )
    }

    /// The event pace: flag > env > the preset's pace > 0.
    pub fn event_delay(&self) -> Result<Sourced<Duration>, SettingError> {
        let preset = self.preset()?;
        self.get(
            def::EVENT_DELAY,
            parse_duration,
            None,
            preset.value.event_delay.map(|d| (preset.value.name, d)),
            Duration::ZERO,
        )
    }
}

impl Knobs {
    /// The connection policy these knobs give.
    pub fn policy(&self) -> crate::db::Policy {
        crate::db::Policy {
            busy_timeout: self.busy_timeout.value,
            busy_wait: self.busy_wait.value,
            synchronous: self.synchronous.value,
            txn_mode: self.txn_mode.value,
            txn_work: self.txn_work.value,
            isolation: self.isolation.value,
            checkpoint: self.checkpoint.value,
            stop: crate::db::StopFlag::default(),
        }
    }
}

/// The report's `settings` object (report.json contract).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ReportSettings {
    pub journal_mode: String,
    pub busy_timeout_ms: u64,
    pub synchronous: String,
    pub txn_mode: String,
    pub atomic_requests: bool,
    pub retry: String,
    pub claim: String,
    pub commit: String,
    pub txn_work_ms: u64,
    /// What makes runbuilds schedule (added field).
    #[serde(default)]
    pub wake: String,
    /// How webui creates a request (added field).
    #[serde(default)]
    pub create_shape: String,
    /// A server's isolation level (added field; SQLite ignores it).
    #[serde(default)]
    pub isolation: String,
    /// The MySQL tables' engine (added field; other backends ignore it).
    #[serde(default)]
    pub mysql_engine: String,
    /// runbuilds polls inside one transaction (added field).
    #[serde(default)]
    pub poll_txn: bool,
    /// webui's write views that may run at once (added field; 0 in reports
    /// written before it).
    #[serde(default)]
    pub writers: u32,
    /// Who runs WAL checkpoints (added field; "" in reports written before
    /// it).
    #[serde(default)]
    pub checkpoint: String,
    /// How a connection waits for SQLite's write lock (added field; "" in
    /// reports written before it).
    #[serde(default)]
    pub busy_wait: String,
}

impl ReportSettings {
    /// The report's settings: the knobs, with the journal mode and synchronous
    /// that the database really uses (read back from the file).
    pub fn from_knobs(k: &Knobs, real_journal: &str, real_sync: &str) -> ReportSettings {
        ReportSettings {
            journal_mode: real_journal.to_string(),
            busy_timeout_ms: u64::try_from(k.busy_timeout.value.as_millis()).unwrap_or(u64::MAX),
            synchronous: real_sync.to_string(),
            txn_mode: k.txn_mode.value.to_string(),
            atomic_requests: k.atomic_requests.value,
            retry: k.retry.value.to_string(),
            claim: k.claim.value.to_string(),
            commit: k.commit.value.to_string(),
            txn_work_ms: u64::try_from(k.txn_work.value.as_millis()).unwrap_or(u64::MAX),
            wake: k.wake.value.to_string(),
            create_shape: k.create_shape.value.to_string(),
            isolation: k.isolation.value.to_string(),
            mysql_engine: k.mysql_engine.value.to_string(),
            poll_txn: k.poll_txn.value,
            writers: k.writers.value,
            checkpoint: k.checkpoint.value.to_string(),
            busy_wait: k.busy_wait.value.to_string(),
        }
    }
}
