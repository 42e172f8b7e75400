//! The knobs' values: enums with one text form each, and the parsers of booleans and durations.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Serialize, Serializer};

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
    /// A server's transaction isolation level (`LAB_ISOLATION`). SQLite has one
    /// (serializable) and ignores the knob.
    Isolation, "isolation level" {
        /// Each statement sees what was committed before it began: Django's
        /// default on PostgreSQL and (since Django 2.0) on MySQL.
        ReadCommitted => "read-committed",
        /// One snapshot for the whole transaction, from its first read: a poll
        /// inside one long transaction never sees new rows (MySQL's default).
        RepeatableRead => "repeatable-read",
        /// As repeatable read, and conflicting transactions fail with a
        /// serialization error (PostgreSQL 40001).
        Serializable => "serializable",
    }
);

impl Isolation {
    /// The level as SQL spells it.
    pub fn sql(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "READ COMMITTED",
            Isolation::RepeatableRead => "REPEATABLE READ",
            Isolation::Serializable => "SERIALIZABLE",
        }
    }
}

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
        /// The second source document's booking loop: inside one transaction,
        /// book free environments one at a time until the request is
        /// satisfied; roll back when they run out. On InnoDB and SQLite the
        /// rollback undoes the partial bookings; on MyISAM it silently does not.
        Incremental => "incremental",
        /// A server's good twin: `SELECT … FOR UPDATE SKIP LOCKED` reads the
        /// queue and the free environments inside the claim's transaction;
        /// rows another claim holds are skipped, not waited for. SQLite has
        /// no row locks: plain reads inside its one write transaction.
        SkipLocked => "skip-locked",
    }
);

knob_enum!(
    /// The storage engine of a MySQL database's tables (`LAB_MYSQL_ENGINE`),
    /// set by `locklab migrate`. Other backends ignore it.
    MysqlEngine, "MySQL storage engine" {
        /// Transactional, row-locking: Django's default since MySQL 5.5.
        Innodb => "innodb",
        /// Not transactional: BEGIN and ROLLBACK are accepted and ignored
        /// (warning 1196), each statement commits on its own.
        Myisam => "myisam",
    }
);

knob_enum!(
    /// What makes runbuilds schedule.
    WakeMode, "wake mode" {
        /// Every poll interval, at once after a pass that claimed, and when
        /// buildinfohelper ends a build (it frees environments; webui does
        /// not wake it).
        Poll => "poll",
        /// Only when notified (SIGUSR1 or POST /wake), as Toaster's runbuilds:
        /// webui notifies after each create, buildinfohelper at the end of each
        /// build; otherwise every 5 s it only checks for dead builds.
        Notify => "notify",
    }
);

knob_enum!(
    /// Who copies the WAL back into the database file (SQLite in WAL mode).
    CheckpointMode, "checkpoint mode" {
        /// SQLite's default: the connection whose COMMIT takes the WAL past
        /// 1000 pages runs the checkpoint then, on its own request's time.
        Auto => "auto",
        /// `PRAGMA wal_autocheckpoint = 0` on every connection, and each
        /// daemon runs a PASSIVE checkpoint every 100 ms on its own thread
        /// and connection: writers only append to the WAL.
        Background => "background",
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
        /// Django's `bulk_create`: the same reads as `lab`, then the
        /// requests in one multi-row INSERT … RETURNING id (SQLite 3.35+,
        /// PostgreSQL; one INSERT each on MySQL, which cannot return the ids
        /// of a multi-row INSERT).
        Bulk => "bulk",
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

/// How a connection waits for SQLite's write lock in the lab's busy handler
/// (`LAB_BUSY_WAIT`). Either way the busy timeout bounds the wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BusyWait {
    /// SQLite's own busy-timeout schedule (`sqliteDefaultBusyCallback`):
    /// 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, then 100 ms. The longer a
    /// connection has waited, the longer it sleeps, so a writer that comes
    /// back every few ms overtakes it again and again. What Django gets.
    Sqlite,
    /// The same short sleep before every retry, however long the wait
    /// (Rails 8's handler does this with 1 ms): a waiter wakes inside the
    /// holder's next gap between transactions.
    Fair(Duration),
}

impl BusyWait {
    /// `fair` without an interval.
    pub const FAIR_DEFAULT: Duration = Duration::from_micros(100);
    /// The longest `fair` interval: SQLite's own longest sleep.
    pub const FAIR_MAX: Duration = Duration::from_millis(100);
}

impl fmt::Display for BusyWait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusyWait::Sqlite => f.write_str("sqlite"),
            BusyWait::Fair(d) => write!(f, "fair:{}", fmt_duration(*d)),
        }
    }
}

impl FromStr for BusyWait {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        let bad = || {
            format!(
                "unknown busy wait {s:?}; expected sqlite, fair, or fair:INTERVAL \
                 (above 0, at most 100ms; e.g. fair:1ms)"
            )
        };
        match s.as_str() {
            "sqlite" => Ok(BusyWait::Sqlite),
            "fair" => Ok(BusyWait::Fair(BusyWait::FAIR_DEFAULT)),
            _ => match s.strip_prefix("fair:").map(parse_duration) {
                Some(Ok(d)) if !d.is_zero() && d <= BusyWait::FAIR_MAX => Ok(BusyWait::Fair(d)),
                _ => Err(bad()),
            },
        }
    }
}

impl Serialize for BusyWait {
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
