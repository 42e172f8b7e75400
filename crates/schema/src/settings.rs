//! Settings, their sources, and the preset table: resolved in one place.
//!
//! Precedence, highest first: a command-line flag, the `LAB_*` variable, the short
//! name of the original Django demo (`WAL`, `TIMEOUT`, `ATOMIC_REQUESTS`, and the
//! load script's `CLIENTS`, `NUM`, `SLEEP`, `DURATION`), the preset (`LAB_PRESET`),
//! then the default. An empty variable counts as unset. Booleans accept
//! true/false, True/False, 1/0 and yes/no. Durations are humantime (`500ms`,
//! `5s`, `2m`); a bare number means seconds, so `TIMEOUT=10` works as in Django.
//!
//! Every resolved value remembers where it came from ([`Source`]) so that each
//! daemon can log its effective settings at startup.
//!
//! The environment is read through an [`Env`] function rather than
//! `std::env::var` directly, so tests resolve against a map of their own.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Serialize, Serializer};

/// A way to read environment variables.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag(&'static str),
    Env(&'static str),
    Alias(&'static str),
    Preset(&'static str),
    Default,
    /// Read back from the database file (journal mode, synchronous).
    File,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(flag) => write!(f, "flag({flag})"),
            Source::Env(name) => write!(f, "env({name})"),
            Source::Alias(name) => write!(f, "env({name})"),
            Source::Preset(name) => write!(f, "preset({name})"),
            Source::Default => f.write_str("default"),
            Source::File => f.write_str("file"),
        }
    }
}

/// A resolved value and its source.
#[derive(Debug, Clone, PartialEq)]
pub struct Sourced<T> {
    pub value: T,
    pub source: Source,
}

impl<T> Sourced<T> {
    pub fn new(value: T, source: Source) -> Self {
        Sourced { value, source }
    }
}

/// A setting that failed to parse, naming where the bad value came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct SettingError {
    pub source_name: String,
    pub message: String,
}

// ---------------------------------------------------------------------------
// Knob values
// ---------------------------------------------------------------------------

macro_rules! knob_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vdoc])* $variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s.trim().to_ascii_lowercase().as_str() {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(concat!("unknown ", $what, " {:?}; expected one of: {}"),
                        other, [$($text),+].join(", "))),
                }
            }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> { s.serialize_str(self.as_str()) }
        }
    };
}

knob_enum!(
    /// SQLite's journal mode. It belongs to the database file: `locklab migrate`
    /// sets it; daemons read it back.
    JournalMode, "journal mode" {
        /// Rollback journal: readers and the writer exclude each other at commit.
        Delete => "delete",
        /// Write-ahead log: readers never block the writer, nor the writer readers.
        Wal => "wal",
    }
);

knob_enum!(
    /// `PRAGMA synchronous`.
    Synchronous, "synchronous" {
        Full => "full",
        Normal => "normal",
        Off => "off",
    }
);

knob_enum!(
    /// How every write transaction begins.
    TxnMode, "transaction mode" {
        /// `BEGIN DEFERRED`: the write lock is taken by the first write, and a
        /// transaction that already read cannot wait for it.
        Deferred => "deferred",
        /// `BEGIN IMMEDIATE`: the write lock is taken (or waited for) at BEGIN.
        Immediate => "immediate",
    }
);

knob_enum!(
    /// What happens after a failed attempt.
    RetryPolicy, "retry policy" {
        /// Give up at once.
        None => "none",
        /// Toaster's patched save: try again forever, sleeping 0.5 s.
        Toaster => "toaster",
        /// Jittered exponential backoff, bounded by the retry deadline.
        Backoff => "backoff",
    }
);

knob_enum!(
    /// How runbuilds claims a request.
    ClaimStrategy, "claim strategy" {
        /// As Toaster: read the request in one transaction, write it in another;
        /// read then lock the environment inside one transaction.
        Toaster => "toaster",
        /// Read and write in one transaction.
        Single => "single",
        /// Conditional updates with a check of the rows affected: no read-then-write.
        Guarded => "guarded",
    }
);

knob_enum!(
    /// What makes runbuilds schedule.
    WakeMode, "wake mode" {
        /// Every poll interval, and when woken.
        Poll => "poll",
        /// Only when notified (SIGUSR1 or POST /wake), as Toaster's runbuilds:
        /// webui notifies after each create, buildinfohelper at the end of each
        /// build; otherwise every 5 s it only checks for dead builds.
        Notify => "notify",
    }
);

knob_enum!(
    /// How webui creates a build request.
    CreateShape, "create shape" {
        /// The original demo's view: get or create the project, read the queue
        /// length, insert the requests.
        Lab => "lab",
        /// Toaster's `Project.schedule_build`: the Build row first, then the
        /// request, then its child rows, each its own transaction, then a
        /// second save of the request.
        Toaster => "toaster",
    }
);

/// How buildinfohelper commits a build's event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommitPolicy {
    /// Every event autocommits.
    PerEvent,
    /// Toaster's buildinfohelper in Django's manual-transaction mode: a sync
    /// every third task-level event (see `strategy::commit::toaster_sync`).
    Every3Tasks,
    /// One transaction per N events.
    Batch(u32),
}

impl fmt::Display for CommitPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommitPolicy::PerEvent => f.write_str("per-event"),
            CommitPolicy::Every3Tasks => f.write_str("every-3-tasks"),
            CommitPolicy::Batch(n) => write!(f, "batch:{n}"),
        }
    }
}

impl FromStr for CommitPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "per-event" => Ok(CommitPolicy::PerEvent),
            "every-3-tasks" => Ok(CommitPolicy::Every3Tasks),
            _ => match s.strip_prefix("batch:").map(str::parse::<u32>) {
                Some(Ok(n)) if n >= 1 => Ok(CommitPolicy::Batch(n)),
                _ => Err(format!(
                    "unknown commit policy {s:?}; expected per-event, every-3-tasks or batch:N (N >= 1)"
                )),
            },
        }
    }
}

impl Serialize for CommitPolicy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Parses a boolean the way Django settings files and shells write them.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim() {
        "true" | "True" | "TRUE" | "1" | "yes" | "Yes" | "YES" => Ok(true),
        "false" | "False" | "FALSE" | "0" | "no" | "No" | "NO" => Ok(false),
        other => Err(format!(
            "not a boolean: {other:?}; use true/false, True/False, 1/0 or yes/no"
        )),
    }
}

/// Parses a duration: humantime (`500ms`, `5s`, `2m`), or a bare number of
/// seconds (`10`, `0.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
        return Err(format!("not a duration: {s:?}; it must not be negative"));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("not a duration: {s:?} ({e}); use e.g. 500ms, 5s, 2m, or seconds"))
}

/// Formats a duration for logs and tables: `5s`, `250ms`, `1m 30s`.
pub fn fmt_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_string();
    }
    humantime::format_duration(Duration::from_micros(
        u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
    ))
    .to_string()
}

// ---------------------------------------------------------------------------
// Presets
// ---------------------------------------------------------------------------

/// A named set of database and strategy knobs. A preset never touches the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    pub name: &'static str,
    pub journal_mode: JournalMode,
    pub busy_timeout: Duration,
    pub synchronous: Synchronous,
    pub txn_mode: TxnMode,
    pub atomic_requests: bool,
    pub retry: RetryPolicy,
    pub claim: ClaimStrategy,
    pub commit: CommitPolicy,
    pub wake: WakeMode,
    pub create_shape: CreateShape,
    /// The pace of the build events (`LAB_EVENT_DELAY`). A preset sets the load
    /// only here, and only to model its stack's pace, like `LAB_TXN_WORK`:
    /// `toaster` paces a 15,000-event build to about a minute, so that the
    /// transaction its buildinfohelper leaves open between syncs spans real
    /// time. None keeps the load's own value.
    pub event_delay: Option<Duration>,
    /// What the tests assert for this preset (present / absent).
    pub asserted: &'static str,
    /// What is also expected, in prose.
    pub expected: &'static str,
}

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// DESIGN.md's preset table.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "django-default",
        journal_mode: JournalMode::Delete,
        busy_timeout: secs(5),
        synchronous: Synchronous::Full,
        txn_mode: TxnMode::Deferred,
        atomic_requests: false,
        retry: RetryPolicy::None,
        claim: ClaimStrategy::Toaster,
        commit: CommitPolicy::PerEvent,
        wake: WakeMode::Poll,
        create_shape: CreateShape::Lab,
        event_delay: None,
        asserted: "any busy_upgrade or busy_snapshot is in runbuilds' select_environment",
        expected: "runbuilds: busy_upgrade in select_environment when it meets a writer (measured: 0-10 in 15-20 s); webui: busy_timeout under heavy load",
    },
    Preset {
        name: "django-atomic",
        journal_mode: JournalMode::Delete,
        busy_timeout: secs(5),
        synchronous: Synchronous::Full,
        txn_mode: TxnMode::Deferred,
        atomic_requests: true,
        retry: RetryPolicy::None,
        claim: ClaimStrategy::Toaster,
        commit: CommitPolicy::PerEvent,
        wake: WakeMode::Poll,
        create_shape: CreateShape::Lab,
        event_delay: None,
        asserted: "webui: busy_upgrade > 0",
        expected: "runbuilds too, in select_environment",
    },
    Preset {
        name: "django-timeout10",
        journal_mode: JournalMode::Delete,
        busy_timeout: secs(10),
        synchronous: Synchronous::Full,
        txn_mode: TxnMode::Deferred,
        atomic_requests: false,
        retry: RetryPolicy::None,
        claim: ClaimStrategy::Toaster,
        commit: CommitPolicy::PerEvent,
        wake: WakeMode::Poll,
        create_shape: CreateShape::Lab,
        event_delay: None,
        asserted: "(as django-default)",
        expected: "the timeout does not help busy_upgrade; fewer busy_timeout",
    },
    Preset {
        name: "django-wal",
        journal_mode: JournalMode::Wal,
        busy_timeout: secs(5),
        synchronous: Synchronous::Full,
        txn_mode: TxnMode::Deferred,
        atomic_requests: false,
        retry: RetryPolicy::None,
        claim: ClaimStrategy::Toaster,
        commit: CommitPolicy::PerEvent,
        wake: WakeMode::Poll,
        create_shape: CreateShape::Lab,
        event_delay: None,
        asserted: "any busy_upgrade or busy_snapshot is in runbuilds' select_environment",
        expected: "runbuilds: busy_upgrade and busy_snapshot in select_environment; webui rarely fails",
    },
    Preset {
        name: "django-all",
        journal_mode: JournalMode::Wal,
        busy_timeout: secs(10),
        synchronous: Synchronous::Full,
        txn_mode: TxnMode::Deferred,
        atomic_requests: true,
        retry: RetryPolicy::None,
        claim: ClaimStrategy::Toaster,
        commit: CommitPolicy::PerEvent,
        wake: WakeMode::Poll,
        create_shape: CreateShape::Lab,
        event_delay: None,
        asserted: "webui: busy_upgrade + busy_snapshot > 0",
        expected: "runbuilds too, in select_environment",
    },
    Preset {
        name: "toaster",
        journal_mode: JournalMode::Delete,
        busy_timeout: secs(20),
        synchronous: Synchronous::Full,
        txn_mode: TxnMode::Deferred,
        atomic_requests: false,
        retry: RetryPolicy::Toaster,
        claim: ClaimStrategy::Toaster,
        commit: CommitPolicy::Every3Tasks,
        wake: WakeMode::Notify,
        create_shape: CreateShape::Toaster,
        event_delay: Some(Duration::from_millis(4)),
        asserted: "upgrades only in select_environment and save_task; a save gives up only when abandoned at shutdown",
        expected: "Toaster as shipped, varies run to run: buildinfohelper save_task busy_upgrade retried inside its block for tens of seconds while the others' commits wait 20 s (rollback), or a busy_snapshot livelock (WAL); sometimes no collision at all",
    },
    Preset {
        name: "immediate",
        journal_mode: JournalMode::Wal,
        busy_timeout: secs(5),
        synchronous: Synchronous::Normal,
        txn_mode: TxnMode::Immediate,
        atomic_requests: true,
        retry: RetryPolicy::None,
        claim: ClaimStrategy::Single,
        commit: CommitPolicy::PerEvent,
        wake: WakeMode::Poll,
        create_shape: CreateShape::Lab,
        event_delay: None,
        asserted: "busy_upgrade = busy_snapshot = 0 everywhere",
        expected: "",
    },
    Preset {
        name: "robust",
        journal_mode: JournalMode::Wal,
        busy_timeout: secs(5),
        synchronous: Synchronous::Normal,
        txn_mode: TxnMode::Immediate,
        atomic_requests: true,
        retry: RetryPolicy::Backoff,
        claim: ClaimStrategy::Guarded,
        commit: CommitPolicy::Batch(500),
        wake: WakeMode::Poll,
        create_shape: CreateShape::Lab,
        event_delay: None,
        asserted: "busy_upgrade = busy_snapshot = 0; gave_up = 0; every check count 0",
        expected: "busy_timeout only when the disk stalls, then retried",
    },
];

/// The default preset.
pub const DEFAULT_PRESET: &str = "django-default";

/// Passes per notification under `notify`: the 7 fields of Python's
/// `struct_siginfo`, which Toaster's runbuilds loops over.
pub const TOASTER_WAKE_PASSES: u32 = 7;

/// robust's durability trade-off, printed by `locklab presets`.
pub const DURABILITY_NOTE: &str = "synchronous=normal in WAL mode survives a crash of the \
process, but a power loss or an OS crash can lose the last transactions committed before it.";

impl Preset {
    pub fn by_name(name: &str) -> Result<&'static Preset, String> {
        PRESETS
            .iter()
            .find(|p| p.name == name.trim())
            .ok_or_else(|| {
                format!(
                    "unknown preset {:?}; run `locklab presets` to list them: {}",
                    name.trim(),
                    PRESETS
                        .iter()
                        .map(|p| p.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }
}

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
        /// The names of every setting.
        pub mod def {
            use super::Def;
            $(pub const $id: Def = Def { key: $key, flag: $flag, env: $env, alias: $alias };)+
            pub const ALL: &[Def] = &[$($id),+];
        }
    };
}

defs! {
    DATABASE_URL = "database_url", "--database-url", "DATABASE_URL", None;
    PRESET = "preset", "--preset", "LAB_PRESET", None;
    JOURNAL_MODE = "journal_mode", "--journal-mode", "LAB_JOURNAL_MODE", Some("WAL");
    BUSY_TIMEOUT = "busy_timeout", "--busy-timeout", "LAB_BUSY_TIMEOUT", Some("TIMEOUT");
    SYNCHRONOUS = "synchronous", "--synchronous", "LAB_SYNCHRONOUS", None;
    TXN_MODE = "txn_mode", "--txn-mode", "LAB_TXN_MODE", None;
    ATOMIC_REQUESTS = "atomic_requests", "--atomic-requests", "LAB_ATOMIC_REQUESTS", Some("ATOMIC_REQUESTS");
    RETRY = "retry", "--retry", "LAB_RETRY", None;
    RETRY_DEADLINE = "retry_deadline", "--retry-deadline", "LAB_RETRY_DEADLINE", None;
    CLAIM = "claim", "--claim", "LAB_CLAIM", None;
    COMMIT = "commit", "--commit", "LAB_COMMIT", None;
    TXN_WORK = "txn_work", "--txn-work", "LAB_TXN_WORK", None;
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
    WAKE = "wake", "--wake", "LAB_WAKE", None;
    WAKE_PASSES = "wake_passes", "--wake-passes", "LAB_WAKE_PASSES", None;
    WAKE_URLS = "wake_urls", "--wake-url", "LAB_WAKE_URLS", None;
    PIDFILE = "pidfile", "--pidfile", "LAB_PIDFILE", None;
    CREATE_SHAPE = "create_shape", "--create-shape", "LAB_CREATE_SHAPE", None;
    CLIENTS = "clients", "--clients", "LAB_CLIENTS", Some("CLIENTS");
    NUM = "num", "--num", "LAB_NUM", Some("NUM");
    SLEEP = "sleep", "--sleep", "LAB_SLEEP", Some("SLEEP");
    DURATION = "duration", "--duration", "LAB_DURATION", Some("DURATION");
    STATS_URLS = "stats_urls", "--stats-url", "LAB_STATS_URLS", None;
    REQUEST_TIMEOUT = "request_timeout", "--request-timeout", "LAB_REQUEST_TIMEOUT", None;
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

    /// The database and strategy knobs, layered over the preset.
    pub fn knobs(&self) -> Result<Knobs, SettingError> {
        let preset = self.preset()?;
        let p = preset.value;
        let pn = p.name;
        let parse_enum = |s: &str| s.parse();
        Ok(Knobs {
            journal_mode: self.get(
                def::JOURNAL_MODE,
                parse_enum,
                Some(&|s: &str| {
                    parse_bool(s).map(|wal| {
                        if wal {
                            JournalMode::Wal
                        } else {
                            JournalMode::Delete
                        }
                    })
                }),
                Some((pn, p.journal_mode)),
                JournalMode::Delete,
            )?,
            busy_timeout: self.get(
                def::BUSY_TIMEOUT,
                parse_duration,
                None,
                Some((pn, p.busy_timeout)),
                secs(5),
            )?,
            synchronous: self.get(
                def::SYNCHRONOUS,
                |s| s.parse(),
                None,
                Some((pn, p.synchronous)),
                Synchronous::Full,
            )?,
            txn_mode: self.get(
                def::TXN_MODE,
                |s| s.parse(),
                None,
                Some((pn, p.txn_mode)),
                TxnMode::Deferred,
            )?,
            atomic_requests: self.get(
                def::ATOMIC_REQUESTS,
                parse_bool,
                None,
                Some((pn, p.atomic_requests)),
                false,
            )?,
            retry: self.get(
                def::RETRY,
                |s| s.parse(),
                None,
                Some((pn, p.retry)),
                RetryPolicy::None,
            )?,
            retry_deadline: self.get(def::RETRY_DEADLINE, parse_duration, None, None, secs(30))?,
            claim: self.get(
                def::CLAIM,
                |s| s.parse(),
                None,
                Some((pn, p.claim)),
                ClaimStrategy::Toaster,
            )?,
            commit: self.get(
                def::COMMIT,
                |s| s.parse(),
                None,
                Some((pn, p.commit)),
                CommitPolicy::PerEvent,
            )?,
            txn_work: self.get(def::TXN_WORK, parse_duration, None, None, Duration::ZERO)?,
            wake: self.get(
                def::WAKE,
                |s| s.parse(),
                None,
                Some((pn, p.wake)),
                WakeMode::Poll,
            )?,
            create_shape: self.get(
                def::CREATE_SHAPE,
                |s| s.parse(),
                None,
                Some((pn, p.create_shape)),
                CreateShape::Lab,
            )?,
            preset,
        })
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

/// The resolved database and strategy knobs.
#[derive(Debug, Clone)]
pub struct Knobs {
    pub preset: Sourced<&'static Preset>,
    pub journal_mode: Sourced<JournalMode>,
    pub busy_timeout: Sourced<Duration>,
    pub synchronous: Sourced<Synchronous>,
    pub txn_mode: Sourced<TxnMode>,
    pub atomic_requests: Sourced<bool>,
    pub retry: Sourced<RetryPolicy>,
    pub retry_deadline: Sourced<Duration>,
    pub claim: Sourced<ClaimStrategy>,
    pub commit: Sourced<CommitPolicy>,
    pub txn_work: Sourced<Duration>,
    pub wake: Sourced<WakeMode>,
    pub create_shape: Sourced<CreateShape>,
}

impl Knobs {
    /// Each knob as (key, value text, source), in the order logs print them.
    pub fn describe(&self) -> Vec<(&'static str, String, Source)> {
        vec![
            (
                "preset",
                self.preset.value.name.to_string(),
                self.preset.source.clone(),
            ),
            (
                "journal_mode",
                self.journal_mode.value.to_string(),
                self.journal_mode.source.clone(),
            ),
            (
                "busy_timeout",
                fmt_duration(self.busy_timeout.value),
                self.busy_timeout.source.clone(),
            ),
            (
                "synchronous",
                self.synchronous.value.to_string(),
                self.synchronous.source.clone(),
            ),
            (
                "txn_mode",
                self.txn_mode.value.to_string(),
                self.txn_mode.source.clone(),
            ),
            (
                "atomic_requests",
                self.atomic_requests.value.to_string(),
                self.atomic_requests.source.clone(),
            ),
            (
                "retry",
                self.retry.value.to_string(),
                self.retry.source.clone(),
            ),
            (
                "retry_deadline",
                fmt_duration(self.retry_deadline.value),
                self.retry_deadline.source.clone(),
            ),
            (
                "claim",
                self.claim.value.to_string(),
                self.claim.source.clone(),
            ),
            (
                "commit",
                self.commit.value.to_string(),
                self.commit.source.clone(),
            ),
            (
                "txn_work",
                fmt_duration(self.txn_work.value),
                self.txn_work.source.clone(),
            ),
            (
                "wake",
                self.wake.value.to_string(),
                self.wake.source.clone(),
            ),
            (
                "create_shape",
                self.create_shape.value.to_string(),
                self.create_shape.source.clone(),
            ),
        ]
    }

    /// The connection policy these knobs give.
    pub fn policy(&self) -> crate::db::Policy {
        crate::db::Policy {
            busy_timeout: self.busy_timeout.value,
            synchronous: self.synchronous.value,
            txn_mode: self.txn_mode.value,
            txn_work: self.txn_work.value,
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
        }
    }
}

/// `LAB_ENVIRONMENTS`: `kind:count,kind:count`.
pub fn parse_environments(s: &str) -> Result<Vec<(String, u32)>, String> {
    let mut out: Vec<(String, u32)> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (kind, count) = part
            .split_once(':')
            .ok_or_else(|| format!("{part:?} is not kind:count (e.g. qemux86:3)"))?;
        let kind = kind.trim();
        if kind.is_empty()
            || !kind
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!(
                "bad environment kind {kind:?}: use letters, digits, - _ ."
            ));
        }
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("bad count in {part:?}: a whole number is needed"))?;
        if count == 0 || count > 1000 {
            return Err(format!("bad count in {part:?}: between 1 and 1000"));
        }
        match out.iter_mut().find(|(k, _)| k == kind) {
            Some(existing) => existing.1 += count,
            None => out.push((kind.to_string(), count)),
        }
    }
    if out.is_empty() {
        return Err("no environments given; e.g. qemux86:3,qemuarm:2".to_string());
    }
    Ok(out)
}

pub const DEFAULT_ENVIRONMENTS: &str = "qemux86:3,qemuarm:2,qemux86-64:2";

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name: &str| map.get(name).cloned()
    }

    #[test]
    fn precedence_flag_env_alias_preset_default() {
        let mut flags = Flags::new();
        // preset only: django-all has a 10 s timeout
        let env = env_of(&[("LAB_PRESET", "django-all")]);
        let k = Resolver::new(&flags, &env).knobs().expect("knobs");
        assert_eq!(k.busy_timeout.value, Duration::from_secs(10));
        assert_eq!(k.busy_timeout.source, Source::Preset("django-all"));
        // default: retry_deadline is not in presets
        assert_eq!(k.retry_deadline.source, Source::Default);
        assert_eq!(k.retry_deadline.value, Duration::from_secs(30));

        // alias beats preset
        let env = env_of(&[("LAB_PRESET", "django-all"), ("TIMEOUT", "7")]);
        let k = Resolver::new(&flags, &env).knobs().expect("knobs");
        assert_eq!(k.busy_timeout.value, Duration::from_secs(7));
        assert_eq!(k.busy_timeout.source, Source::Alias("TIMEOUT"));

        // LAB_* beats alias
        let env = env_of(&[
            ("LAB_PRESET", "django-all"),
            ("TIMEOUT", "7"),
            ("LAB_BUSY_TIMEOUT", "250ms"),
        ]);
        let k = Resolver::new(&flags, &env).knobs().expect("knobs");
        assert_eq!(k.busy_timeout.value, Duration::from_millis(250));
        assert_eq!(k.busy_timeout.source, Source::Env("LAB_BUSY_TIMEOUT"));

        // flag beats everything
        flags.insert("busy_timeout", "2s".to_string());
        let k = Resolver::new(&flags, &env).knobs().expect("knobs");
        assert_eq!(k.busy_timeout.value, Duration::from_secs(2));
        assert_eq!(k.busy_timeout.source, Source::Flag("--busy-timeout"));

        // and the preset itself: flag > env > default
        let none = Flags::new();
        let k = Resolver::new(&none, &env_of(&[])).knobs().expect("knobs");
        assert_eq!(k.preset.value.name, "django-default");
        assert_eq!(k.preset.source, Source::Default);
        let mut pflags = Flags::new();
        pflags.insert("preset", "robust".to_string());
        let k = Resolver::new(&pflags, &env_of(&[("LAB_PRESET", "django-all")]))
            .knobs()
            .expect("knobs");
        assert_eq!(k.preset.value.name, "robust");
        assert_eq!(k.commit.value, CommitPolicy::Batch(500));
    }

    #[test]
    fn demo_aliases_parse_like_django() {
        let flags = Flags::new();
        let env = env_of(&[
            ("WAL", "True"),
            ("TIMEOUT", "10"),
            ("ATOMIC_REQUESTS", "yes"),
        ]);
        let k = Resolver::new(&flags, &env).knobs().expect("knobs");
        assert_eq!(k.journal_mode.value, JournalMode::Wal);
        assert_eq!(k.journal_mode.source, Source::Alias("WAL"));
        assert_eq!(k.busy_timeout.value, Duration::from_secs(10));
        assert!(k.atomic_requests.value);

        let env = env_of(&[("WAL", "False"), ("LAB_PRESET", "django-wal")]);
        let k = Resolver::new(&flags, &env).knobs().expect("knobs");
        assert_eq!(k.journal_mode.value, JournalMode::Delete);

        // LAB_JOURNAL_MODE takes the mode's name, not a boolean
        let env = env_of(&[("LAB_JOURNAL_MODE", "WAL")]);
        let k = Resolver::new(&flags, &env).knobs().expect("knobs");
        assert_eq!(k.journal_mode.value, JournalMode::Wal);
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let flags = Flags::new();
        let env = env_of(&[
            ("TIMEOUT", ""),
            ("LAB_BUSY_TIMEOUT", "  "),
            ("WAL", ""),
            ("LAB_PRESET", ""),
        ]);
        let k = Resolver::new(&flags, &env).knobs().expect("knobs");
        assert_eq!(k.busy_timeout.value, Duration::from_secs(5));
        assert_eq!(k.busy_timeout.source, Source::Preset("django-default"));
        assert_eq!(k.journal_mode.value, JournalMode::Delete);
        assert_eq!(k.preset.source, Source::Default);
    }

    #[test]
    fn bad_values_name_their_source() {
        let flags = Flags::new();
        let env = env_of(&[("TIMEOUT", "soon")]);
        let err = Resolver::new(&flags, &env)
            .knobs()
            .expect_err("bad timeout");
        assert_eq!(err.source_name, "TIMEOUT");
        assert!(err.message.contains("not a duration"), "{}", err.message);
        let env = env_of(&[("LAB_PRESET", "nope")]);
        let err = Resolver::new(&flags, &env).knobs().expect_err("bad preset");
        assert!(err.message.contains("locklab presets"), "{}", err.message);
        let env = env_of(&[("ATOMIC_REQUESTS", "maybe")]);
        assert!(Resolver::new(&flags, &env).knobs().is_err());
    }

    #[test]
    fn parsers() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("fast").is_err());
        for t in ["true", "True", "1", "yes"] {
            assert_eq!(parse_bool(t), Ok(true));
        }
        for f in ["false", "False", "0", "no"] {
            assert_eq!(parse_bool(f), Ok(false));
        }
        assert_eq!(
            "batch:500".parse::<CommitPolicy>(),
            Ok(CommitPolicy::Batch(500))
        );
        assert!("batch:0".parse::<CommitPolicy>().is_err());
        assert_eq!(
            parse_environments(DEFAULT_ENVIRONMENTS).expect("envs"),
            vec![
                ("qemux86".to_string(), 3),
                ("qemuarm".to_string(), 2),
                ("qemux86-64".to_string(), 2)
            ]
        );
        assert!(parse_environments("qemux86").is_err());
        assert!(parse_environments("").is_err());
        for p in PRESETS {
            assert_eq!(Preset::by_name(p.name).map(|x| x.name), Ok(p.name));
        }
    }
}
