//! Errors and the lock-error classes.
//!
//! Error policy of the workspace:
//! - model functions return diesel's `QueryResult`;
//! - the lab's entry points ([`crate::db::LabConn`]) turn a failed call into a
//!   [`DbError`], which carries the [`LockClass`] taken from the real SQLite code,
//!   because callers (retry, stats, the HTTP edge) branch on the class;
//! - daemons and the CLI use `anyhow` with context;
//! - the HTTP edge has one `ResponseError` and never shows SQL text.
//!
//! # How a class is recovered
//!
//! diesel keeps only SQLite's message ("database is locked") and drops the
//! extended result code. locklab therefore keeps each connection's raw `sqlite3*`
//! handle beside the diesel connection (see [`crate::db`]) and reads
//! `sqlite3_extended_errcode` on that handle *right after the failing call*, before
//! any `ROLLBACK` (which would overwrite the code). Beside the code it reads the
//! busy handler's record for the failing statement, which is reset at the start of
//! every statement by an `SQLITE_TRACE_STMT` hook:
//!
//! | code | busy handler during the failing statement | class |
//! |---|---|---|
//! | `SQLITE_BUSY_SNAPSHOT` (517) | never called | `busy_snapshot` |
//! | `SQLITE_BUSY` (5) | gave up (returned 0) | `busy_timeout` |
//! | `SQLITE_BUSY` (5) | not called | `busy_upgrade` |
//! | other `SQLITE_BUSY_*` | gave up | `busy_timeout`, else `other` |
//! | `SQLITE_LOCKED` (6, any extended) | | `locked` |
//! | `SQLITE_CONSTRAINT` (19, any extended) | | `constraint` |
//!
//! No class is ever inferred from elapsed time.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a failed attempt really was. Every failed attempt is counted under exactly
/// one class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockClass {
    /// SQLITE_BUSY at once, without the busy handler: a deferred transaction that had
    /// read tried to write while another connection held or wanted the write lock.
    BusyUpgrade,
    /// SQLITE_BUSY_SNAPSHOT (WAL): another connection committed after this
    /// transaction's first read.
    BusySnapshot,
    /// SQLITE_BUSY after the busy handler gave up during the failing statement.
    BusyTimeout,
    /// SQLITE_LOCKED: a conflict inside one connection (shared cache, a pending
    /// statement).
    Locked,
    /// A constraint violation.
    Constraint,
    /// PostgreSQL 40001 (server backends).
    Serialization,
    /// PostgreSQL 40P01, MySQL 1213 (server backends).
    Deadlock,
    /// MySQL 1205 (server backends).
    LockWaitTimeout,
    /// Anything else.
    Other,
}

impl LockClass {
    /// Every class, in the report's order.
    pub const ALL: [LockClass; 9] = [
        LockClass::BusyUpgrade,
        LockClass::BusySnapshot,
        LockClass::BusyTimeout,
        LockClass::Locked,
        LockClass::Constraint,
        LockClass::Serialization,
        LockClass::Deadlock,
        LockClass::LockWaitTimeout,
        LockClass::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LockClass::BusyUpgrade => "busy_upgrade",
            LockClass::BusySnapshot => "busy_snapshot",
            LockClass::BusyTimeout => "busy_timeout",
            LockClass::Locked => "locked",
            LockClass::Constraint => "constraint",
            LockClass::Serialization => "serialization",
            LockClass::Deadlock => "deadlock",
            LockClass::LockWaitTimeout => "lock_wait_timeout",
            LockClass::Other => "other",
        }
    }

    /// Whether trying again can succeed. Constraint violations and unknown errors
    /// are final: a retry would fail the same way.
    pub fn is_transient(self) -> bool {
        !matches!(self, LockClass::Constraint | LockClass::Other)
    }

    /// Index into [`LockClass::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Class from the extended result code read on the failing connection and the
    /// busy handler's record of the failing statement.
    pub fn from_sqlite(extended_code: i32, busy_gave_up: bool, busy_called: bool) -> LockClass {
        const SQLITE_BUSY: i32 = 5;
        const SQLITE_LOCKED: i32 = 6;
        const SQLITE_CONSTRAINT: i32 = 19;
        const SQLITE_BUSY_SNAPSHOT: i32 = SQLITE_BUSY | (2 << 8);
        match extended_code {
            SQLITE_BUSY_SNAPSHOT => LockClass::BusySnapshot,
            SQLITE_BUSY if busy_gave_up => LockClass::BusyTimeout,
            SQLITE_BUSY if !busy_called => LockClass::BusyUpgrade,
            code if code & 0xff == SQLITE_BUSY && busy_gave_up => LockClass::BusyTimeout,
            code if code & 0xff == SQLITE_LOCKED => LockClass::Locked,
            code if code & 0xff == SQLITE_CONSTRAINT => LockClass::Constraint,
            _ => LockClass::Other,
        }
    }
}

impl fmt::Display for LockClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for LockClass {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        LockClass::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown lock class {s:?}"))
    }
}

/// Where in a transaction an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Begin,
    Body,
    Commit,
    Autocommit,
    Read,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Begin => "begin",
            Phase::Body => "body",
            Phase::Commit => "commit",
            Phase::Autocommit => "autocommit",
            Phase::Read => "read",
        })
    }
}

/// A server's error code: PostgreSQL's five-character SQLSTATE or MySQL's
/// errno (at most five digits). Fixed-size, so errors stay small.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerCode([u8; 5]);

impl ServerCode {
    /// `None` for anything longer than five ASCII characters.
    pub fn new(code: &str) -> Option<ServerCode> {
        let bytes = code.as_bytes();
        if bytes.is_empty() || bytes.len() > 5 || !code.is_ascii() {
            return None;
        }
        let mut b = [b' '; 5];
        b[..bytes.len()].copy_from_slice(bytes);
        Some(ServerCode(b))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("").trim_end()
    }
}

impl fmt::Display for ServerCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One failed database attempt, classified from the real code on the failing
/// connection.
#[derive(Debug, Clone)]
pub struct DbError {
    pub class: LockClass,
    pub phase: Phase,
    /// `sqlite3_extended_errcode` read right after the failing call (0 when the
    /// error did not come from SQLite).
    pub extended_code: i32,
    /// A server's own code, read on the failing connection: PostgreSQL's
    /// SQLSTATE (`40001`, `40P01`, `55P03`), MySQL's errno (`1213`, `1205`).
    pub server_code: Option<ServerCode>,
    /// Time the busy handler waited during the failing statement.
    pub waited: Duration,
    /// How many times the busy handler ran during the failing statement.
    pub busy_calls: u32,
    /// SQLite's message. Logged, never sent to HTTP clients.
    pub message: String,
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} during {} ({}, waited {:?}): {}",
            self.class,
            self.phase,
            self.code_text(),
            self.waited,
            self.message
        )
    }
}

impl std::error::Error for DbError {}

impl DbError {
    /// An error that did not come from SQLite (a row that failed to deserialize,
    /// a pool timeout...).
    pub fn other(phase: Phase, message: impl Into<String>) -> DbError {
        DbError {
            class: LockClass::Other,
            phase,
            extended_code: 0,
            server_code: None,
            waited: Duration::ZERO,
            busy_calls: 0,
            message: message.into(),
        }
    }

    /// The code for messages: the server's, else SQLite's.
    pub fn code_text(&self) -> String {
        match &self.server_code {
            Some(code) => format!("server code {code}"),
            None => format!("sqlite code {}", self.extended_code),
        }
    }

    pub fn waited_ms(&self) -> f64 {
        self.waited.as_secs_f64() * 1000.0
    }

    /// SQLite's primary result code (the low byte of the extended one).
    fn primary_code(&self) -> i32 {
        if self.server_code.is_some() {
            0
        } else {
            self.extended_code & 0xff
        }
    }

    /// SQLITE_FULL or SQLITE_IOERR: the disk failed, not a lock. The write
    /// was rolled back and may succeed once space or the device comes back,
    /// so a bounded retry (`backoff`) tries it again; the other policies do
    /// not (Toaster matches "database is locked" only).
    pub fn is_disk(&self) -> bool {
        const SQLITE_IOERR: i32 = 10;
        const SQLITE_FULL: i32 = 13;
        matches!(self.primary_code(), SQLITE_IOERR | SQLITE_FULL)
    }

    /// What an `other` error means, for its log line, from SQLite's code.
    pub fn hint(&self) -> Option<&'static str> {
        Some(match self.primary_code() {
            8 => "the database is read-only for this process: check that its user can write the file and its directory (WAL creates -wal and -shm beside it)",
            10 => "an I/O error from the disk (with RLIMIT_FSIZE, a write past the file size limit)",
            11 => "the database file is corrupt: run PRAGMA integrity_check, and restore it from a backup",
            13 => "the disk is full: free space; the write was rolled back",
            14 => "the database file cannot be opened",
            26 => "the file is not an SQLite database",
            _ => return None,
        })
    }
}

/// How an operation finally failed: the database refused (after the retry policy
/// had its say), or the application chose to roll back.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The last failed attempt; the operation is counted as given up.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The closure asked for a rollback (a lost race, a request that vanished).
    /// Not a failure of the database: nothing is counted as failed.
    #[error("rolled back: {0}")]
    Aborted(String),
}

impl OpError {
    pub fn class(&self) -> Option<LockClass> {
        match self {
            OpError::Db(e) => Some(e.class),
            OpError::Aborted(_) => None,
        }
    }
}

/// What a closure inside a transaction may return: a diesel error (to be
/// classified) or a deliberate rollback.
#[derive(Debug)]
pub enum TxError {
    Db(diesel::result::Error),
    Abort(String),
}

impl From<diesel::result::Error> for TxError {
    fn from(e: diesel::result::Error) -> Self {
        TxError::Db(e)
    }
}

impl TxError {
    pub fn abort(reason: impl Into<String>) -> TxError {
        TxError::Abort(reason.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_from_codes() {
        assert_eq!(
            LockClass::from_sqlite(517, false, false),
            LockClass::BusySnapshot
        );
        assert_eq!(
            LockClass::from_sqlite(5, false, false),
            LockClass::BusyUpgrade
        );
        assert_eq!(
            LockClass::from_sqlite(5, true, true),
            LockClass::BusyTimeout
        );
        // the handler ran for an earlier lock of the statement but did not give up
        assert_eq!(LockClass::from_sqlite(5, false, true), LockClass::Other);
        assert_eq!(LockClass::from_sqlite(6, false, false), LockClass::Locked);
        assert_eq!(
            LockClass::from_sqlite(2067, false, false),
            LockClass::Constraint
        );
        assert_eq!(LockClass::from_sqlite(1, false, false), LockClass::Other);
        for c in LockClass::ALL {
            assert_eq!(c.as_str().parse::<LockClass>(), Ok(c));
            assert_eq!(LockClass::ALL[c.index()], c);
        }
    }
}
