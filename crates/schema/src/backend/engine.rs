//! The backend interface: what differs per database on one open connection.
//!
//! [`crate::backend::LabConn`] owns the lab's transaction bookkeeping (blocks,
//! savepoints, Django's manual mode, pending rows, attempt times) once, for every
//! backend, and asks its [`Engine`] only what the database decides: how a
//! transaction begins, whether one is open, what a failure was, and how long the
//! connection waited for a lock. Opening a connection (and so the pool's setup)
//! is each backend's `open`; the startup check is `crate::migrate`'s.

use std::fmt;
use std::time::Duration;

use crate::backend::Conn;
use crate::error::{DbError, Phase};
use crate::settings::TxnMode;

use super::sqlite::BusyRecord;

/// Which database a connection talks to. Its name is report.json's `backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Sqlite,
    Postgres,
    Mysql,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Sqlite => "sqlite",
            Kind::Postgres => "postgres",
            Kind::Mysql => "mysql",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one open connection's database decides, as the lab's connection asks it.
pub trait Engine: Send {
    fn kind(&self) -> Kind;

    /// The statement that begins a write transaction. SQLite: `BEGIN DEFERRED`
    /// or `BEGIN IMMEDIATE` as the policy's mode says; `implicit` is the BEGIN
    /// Python's sqlite3 issues before a write in manual mode. A server: its
    /// `START TRANSACTION`, at the session's isolation level.
    fn begin_sql(&self, mode: TxnMode, implicit: bool) -> &'static str;

    /// Whether a SAVEPOINT with no transaction open begins one (SQLite) or
    /// needs a BEGIN first (the servers).
    fn savepoint_begins_transaction(&self) -> bool;

    /// The database's own view of whether a transaction is open, where it has a
    /// cheap one (SQLite's autocommit flag). `None`: the lab's own bookkeeping
    /// of its BEGIN, COMMIT and ROLLBACK decides.
    fn in_transaction(&self) -> Option<bool>;

    /// Whether the open transaction holds the write lock, where the database
    /// says so (SQLite's `SQLITE_TXN_WRITE`).
    fn holds_write_lock(&self) -> Option<bool>;

    /// Classifies a failed call from the failing connection's own error code.
    /// Called right after the failure, before anything else (a ROLLBACK above
    /// all) runs on the connection.
    fn classify(&mut self, conn: &mut Conn, phase: Phase, err: &diesel::result::Error) -> DbError;

    /// The lock wait of the last statement.
    fn busy_record(&self) -> BusyRecord;

    /// The time this connection waited for locks in all, where it can be
    /// measured (`None` on a server: the wait happens inside the server).
    fn total_lock_wait(&self) -> Option<Duration>;

    /// How long a statement waits for a lock before it fails.
    fn busy_timeout(&self) -> Duration;

    /// Wall-clock µs at which the open transaction (or the last autocommit
    /// statement) first held the write lock, where it can be seen.
    fn lock_acquired_at(&self) -> Option<i64>;

    /// Forgets the moment above: a new transaction or statement begins.
    fn reset_acquired(&self);

    /// Right after a ROLLBACK: the warning the database raised, if any, as
    /// (code, message). MySQL's 1196 says the rollback could not undo changes
    /// to non-transactional (MyISAM) tables; ORMs never look.
    fn rollback_warning(&mut self, _conn: &mut Conn) -> Option<(i32, String)> {
        None
    }
}
