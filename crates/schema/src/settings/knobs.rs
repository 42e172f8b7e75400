//! The knobs: the database and strategy settings a preset sets. Each knob is
//! declared once, in the table at the bottom of this file, with its names, its
//! help, its type, its parser and its default. From that one line come:
//! - its [`Def`] (`knob_def::BUSY_TIMEOUT`, also reachable as `def::BUSY_TIMEOUT`);
//! - its command-line flag and help ([`KNOBS`], which the daemons' and
//!   `locklab`'s clap commands take through `daemon::KnobArgs`);
//! - its field in [`PresetKnobs`] (what a preset sets; `None` keeps the default);
//! - its field in [`Knobs`] (the resolved value and where it came from);
//! - its resolution by precedence ([`Resolver::knobs`]);
//! - its line in the daemons' startup log and in `locklab presets`
//!   ([`Knobs::describe`], [`PresetKnobs::describe`]).

use std::time::Duration;

use super::*;

/// One knob's names and help, for the command line.
#[derive(Debug, Clone, Copy)]
pub struct KnobSpec {
    pub def: Def,
    /// The flag's value name in `--help` (`DURATION`).
    pub value_name: &'static str,
    /// The flag's help: the knob's doc comment.
    pub help: &'static str,
}

/// A knob value's text in logs and tables.
pub trait KnobText {
    fn knob_text(&self) -> String;
}

impl KnobText for Duration {
    fn knob_text(&self) -> String {
        fmt_duration(*self)
    }
}

macro_rules! knob_text_by_display {
    ($($t:ty),+) => { $(impl KnobText for $t { fn knob_text(&self) -> String { self.to_string() } })+ };
}
knob_text_by_display!(
    bool,
    u32,
    JournalMode,
    Synchronous,
    TxnMode,
    Isolation,
    MysqlEngine,
    RetryPolicy,
    ClaimStrategy,
    CommitPolicy,
    WakeMode,
    CreateShape,
    CheckpointMode,
    BusyWait
);

/// Parses an enum knob by its `FromStr`.
fn by_name<T: std::str::FromStr<Err = String>>(s: &str) -> Result<T, String> {
    s.parse()
}

/// `WAL=True` (the demo's alias) is a boolean.
fn wal_alias(s: &str) -> Result<JournalMode, String> {
    parse_bool(s).map(|wal| {
        if wal {
            JournalMode::Wal
        } else {
            JournalMode::Delete
        }
    })
}

macro_rules! knobs {
    ($(
        $(#[doc = $doc:literal])+
        $field:ident: $ty:ty = $id:ident($flag:literal, $env:literal, alias $alias:expr, $value_name:literal),
            parse $parse:expr, alias_parse $alias_parse:expr, default $default:expr;
    )+) => {
        /// The knobs' names ([`Def`]); `def` re-exports them.
        #[allow(non_upper_case_globals)]
        pub mod knob_def {
            use super::Def;
            $(pub const $id: Def = Def { key: stringify!($field), flag: $flag, env: $env, alias: $alias };)+
        }

        /// Every knob's names and help, in the order logs print them.
        pub const KNOBS: &[KnobSpec] = &[$(KnobSpec {
            def: knob_def::$id,
            value_name: $value_name,
            help: concat!($($doc),+),
        }),+];

        /// What a preset sets: `None` keeps the knob's default.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct PresetKnobs {
            $(pub $field: Option<$ty>,)+
        }

        /// A preset that sets nothing: spread it into a preset (`..UNSET`).
        pub const UNSET: PresetKnobs = PresetKnobs { $($field: None,)+ };

        impl PresetKnobs {
            /// Each knob as (names, the value this preset gives it, whether the
            /// preset sets it or it is the default).
            pub fn describe(&self) -> Vec<(Def, String, bool)> {
                vec![$((
                    knob_def::$id,
                    self.$field.unwrap_or($default).knob_text(),
                    self.$field.is_some(),
                )),+]
            }
        }

        /// The resolved database and strategy knobs.
        #[derive(Debug, Clone)]
        pub struct Knobs {
            pub preset: Sourced<&'static Preset>,
            $(pub $field: Sourced<$ty>,)+
        }

        impl Knobs {
            /// Each knob as (key, value text, source), in the order logs print them.
            pub fn describe(&self) -> Vec<(&'static str, String, Source)> {
                vec![
                    ("preset", self.preset.value.name.to_string(), self.preset.source.clone()),
                    $((stringify!($field), self.$field.value.knob_text(), self.$field.source.clone()),)+
                ]
            }
        }

        impl<'a> Resolver<'a> {
            /// The database and strategy knobs, layered over the preset.
            pub fn knobs(&self) -> Result<Knobs, SettingError> {
                let preset = self.preset()?;
                let p = preset.value;
                Ok(Knobs {
                    $($field: {
                        let alias_parse: Option<fn(&str) -> Result<$ty, String>> = $alias_parse;
                        self.get(
                            knob_def::$id,
                            $parse,
                            alias_parse.as_ref().map(|f| f as Parser<'_, $ty>),
                            p.knobs.$field.map(|v| (p.name, v)),
                            $default,
                        )?
                    },)+
                    preset,
                })
            }
        }
    };
}

knobs! {
    /// Journal mode you expect (delete or wal; alias WAL=true/false). The file's
    /// mode wins: it is set by `locklab migrate`; a daemon only warns. SQLite only.
    journal_mode: JournalMode = JOURNAL_MODE("--journal-mode", "LAB_JOURNAL_MODE", alias Some("WAL"), "MODE"),
        parse by_name, alias_parse Some(wal_alias), default JournalMode::Delete;
    /// How long a statement waits for a lock before it fails: SQLite's busy
    /// timeout (alias TIMEOUT, in seconds as in Django), PostgreSQL's
    /// lock_timeout, MySQL's innodb_lock_wait_timeout (whole seconds).
    busy_timeout: Duration = BUSY_TIMEOUT("--busy-timeout", "LAB_BUSY_TIMEOUT", alias Some("TIMEOUT"), "DURATION"),
        parse parse_duration, alias_parse None, default secs(5);
    /// How a connection waits for SQLite's write lock: sqlite (SQLite's
    /// busy-timeout schedule, 1, 2, 5 … 100 ms: the longer it has waited,
    /// the longer it sleeps) or fair[:INTERVAL] (the same short sleep on
    /// every retry, 100us unless given). The busy timeout bounds both.
    /// SQLite only.
    busy_wait: BusyWait = BUSY_WAIT("--busy-wait", "LAB_BUSY_WAIT", alias None, "MODE"),
        parse by_name, alias_parse None, default BusyWait::Sqlite;
    /// PRAGMA synchronous: full, normal or off. SQLite only.
    synchronous: Synchronous = SYNCHRONOUS("--synchronous", "LAB_SYNCHRONOUS", alias None, "MODE"),
        parse by_name, alias_parse None, default Synchronous::Full;
    /// How write transactions begin on SQLite: deferred or immediate.
    txn_mode: TxnMode = TXN_MODE("--txn-mode", "LAB_TXN_MODE", alias None, "MODE"),
        parse by_name, alias_parse None, default TxnMode::Deferred;
    /// A server's transaction isolation level: read-committed,
    /// repeatable-read or serializable. SQLite ignores it.
    isolation: Isolation = ISOLATION("--isolation", "LAB_ISOLATION", alias None, "LEVEL"),
        parse by_name, alias_parse None, default Isolation::ReadCommitted;
    /// The MySQL tables' storage engine, set by `locklab migrate`: innodb or
    /// myisam (not transactional). Other backends ignore it.
    mysql_engine: MysqlEngine = MYSQL_ENGINE("--mysql-engine", "LAB_MYSQL_ENGINE", alias None, "ENGINE"),
        parse by_name, alias_parse None, default MysqlEngine::Innodb;
    /// One transaction per HTTP request, as Django's ATOMIC_REQUESTS (alias
    /// ATOMIC_REQUESTS). Used by webui.
    atomic_requests: bool = ATOMIC_REQUESTS("--atomic-requests", "LAB_ATOMIC_REQUESTS", alias Some("ATOMIC_REQUESTS"), "BOOL"),
        parse parse_bool, alias_parse None, default false;
    /// After a failed attempt: none, toaster (forever, 0.5 s apart) or backoff.
    retry: RetryPolicy = RETRY("--retry", "LAB_RETRY", alias None, "POLICY"),
        parse by_name, alias_parse None, default RetryPolicy::None;
    /// How long `backoff` keeps trying one operation.
    retry_deadline: Duration = RETRY_DEADLINE("--retry-deadline", "LAB_RETRY_DEADLINE", alias None, "DURATION"),
        parse parse_duration, alias_parse None, default secs(30);
    /// How runbuilds claims: toaster, single, guarded, skip-locked or
    /// incremental.
    claim: ClaimStrategy = CLAIM("--claim", "LAB_CLAIM", alias None, "STRATEGY"),
        parse by_name, alias_parse None, default ClaimStrategy::Toaster;
    /// runbuilds polls inside one long-lived transaction, as pre-1.6 Django
    /// code did: under repeatable-read its snapshot never moves.
    poll_txn: bool = POLL_TXN("--poll-txn", "LAB_POLL_TXN", alias None, "BOOL"),
        parse parse_bool, alias_parse None, default false;
    /// How buildinfohelper commits: per-event, every-3-tasks or batch:N.
    commit: CommitPolicy = COMMIT("--commit", "LAB_COMMIT", alias None, "POLICY"),
        parse by_name, alias_parse None, default CommitPolicy::PerEvent;
    /// App work inside each write transaction, modelling a slower stack.
    txn_work: Duration = TXN_WORK("--txn-work", "LAB_TXN_WORK", alias None, "DURATION"),
        parse parse_duration, alias_parse None, default Duration::ZERO;
    /// What makes runbuilds schedule: poll (every poll interval, and when
    /// buildinfohelper ends a build) or notify (only when webui or
    /// buildinfohelper wake it, as Toaster does).
    wake: WakeMode = WAKE("--wake", "LAB_WAKE", alias None, "MODE"),
        parse by_name, alias_parse None, default WakeMode::Poll;
    /// How webui creates a request: lab (the demo's view) or toaster (Build
    /// row, request, child rows, each its own transaction).
    create_shape: CreateShape = CREATE_SHAPE("--create-shape", "LAB_CREATE_SHAPE", alias None, "SHAPE"),
        parse by_name, alias_parse None, default CreateShape::Lab;
    /// webui's write views (creates, cancels) that may run at once; the rest
    /// wait inside webui, first come first served, instead of racing each
    /// other through SQLite's busy handler. 1 makes webui a single writer.
    writers: u32 = WRITERS("--writers", "LAB_WRITERS", alias None, "N"),
        parse parse_writers, alias_parse None, default WEBUI_POOL_SIZE;
    /// Who runs WAL checkpoints: auto (the committing connection, SQLite's
    /// default) or background (every daemon's own thread; writers only
    /// append). SQLite in WAL mode only.
    checkpoint: CheckpointMode = CHECKPOINT("--checkpoint", "LAB_CHECKPOINT", alias None, "MODE"),
        parse by_name, alias_parse None, default CheckpointMode::Auto;
}

/// webui's connections: one per concurrent view, with room to spare. The
/// default of `writers`: every connection may write.
pub const WEBUI_POOL_SIZE: u32 = 8;

fn parse_writers(s: &str) -> Result<u32, String> {
    s.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=WEBUI_POOL_SIZE).contains(n))
        .ok_or_else(|| format!("{s:?} is not a count of writers between 1 and {WEBUI_POOL_SIZE}"))
}
