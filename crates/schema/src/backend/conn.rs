//! The lab's connection, for every backend: the diesel connection beside its
//! [`Engine`], and the lab's transaction entry points (atomic blocks and their
//! savepoints, Django's manual mode, autocommit statements, pending rows and
//! the times of each attempt), written once.

use std::sync::Arc;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use crate::backend::Conn;
use crate::db::Policy;
use crate::error::{DbError, Phase, TxError};
use crate::types::now_micros;

use super::engine::{Engine, Kind};
use super::server;
use super::sqlite::{self, BusyRecord};
use super::target::DbTarget;

// ---------------------------------------------------------------------------
// The connection
// ---------------------------------------------------------------------------

/// A connection with the lab's policy: the diesel connection and its backend's
/// [`Engine`] side by side, plus the state of its transaction.
pub struct LabConn {
    // Field order matters: the diesel connection (which closes SQLite's
    // handle) is dropped before the engine, whose hooks the handle's callbacks
    // point to.
    conn: Conn,
    engine: Box<dyn Engine>,
    policy: Arc<Policy>,
    /// Django's manual-transaction mode (autocommit off, as Toaster's
    /// buildinfohelper runs after its first sync): a block with no transaction
    /// open begins one with SAVEPOINT, which SQLite always begins deferred, and
    /// a bare statement begins one implicitly that stays open until
    /// [`LabConn::sync`].
    manual: bool,
    /// Rollbacks that raised a warning, not yet taken by the stats.
    rollback_warnings: u64,
    /// Savepoints open inside the current transaction.
    depth: u32,
    /// The id of the open transaction (0 when none), for the trace.
    txn: u64,
    txn_seq: u64,
    /// Rows written inside the open transaction, by operation, not committed yet.
    pending: Vec<(&'static str, u64)>,
    /// The lab began a transaction and has not ended it: whether one is open,
    /// for a backend with no cheap view of its own (the servers).
    open: bool,
}

impl std::fmt::Debug for LabConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabConn")
            .field("backend", &self.engine.kind())
            .field("policy", &self.policy)
            .field("manual", &self.manual)
            .field("txn", &self.txn)
            .finish_non_exhaustive()
    }
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open {path}: {message}")]
    Open { path: String, message: String },
    #[error("cannot set up the connection to {path}: {message}")]
    Setup { path: String, message: String },
}

/// When an attempt waited, held the write lock and ended, and in which
/// transaction.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttemptTimes {
    /// Wall-clock µs when the attempt began waiting (BEGIN or the statement).
    pub started: i64,
    /// Wall-clock µs when the write lock was really obtained, if it was during
    /// this attempt (for a transaction: the moment its first write returned).
    pub acquired: Option<i64>,
    /// Wall-clock µs when the attempt ended.
    pub ended: i64,
    /// The transaction the attempt ran in (0: an autocommit statement).
    pub txn: u64,
    /// The attempt was a savepoint inside a transaction that stays open.
    pub nested: bool,
}

/// Rows that became durable with a commit, by the operation that wrote them.
pub type Committed = Vec<(&'static str, u64)>;

/// A failed attempt and its times.
#[derive(Debug)]
pub struct AttemptError {
    pub error: AttemptFailure,
    pub times: AttemptTimes,
    /// Rows that committed anyway (autocommit statements before the failure).
    pub rows: u64,
}

#[derive(Debug)]
pub enum AttemptFailure {
    Db(DbError),
    Aborted(String),
}

/// A transaction body's handle: the diesel connection, and a count of the rows
/// the body wrote (so `rows_committed` counts committed rows only).
pub struct Tx<'c> {
    conn: &'c mut Conn,
    rows: u64,
}

impl<'c> Tx<'c> {
    pub fn conn(&mut self) -> &mut Conn {
        self.conn
    }

    /// Runs a write and counts the rows SQLite reports it changed.
    pub fn counted(
        &mut self,
        write: impl FnOnce(&mut Conn) -> QueryResult<usize>,
    ) -> QueryResult<usize> {
        let n = write(self.conn)?;
        self.rows += n as u64;
        Ok(n)
    }

    /// Runs an insert that returns the new row's id; one row is counted.
    pub fn inserted<T>(
        &mut self,
        insert: impl FnOnce(&mut Conn) -> QueryResult<T>,
    ) -> QueryResult<T> {
        let v = insert(self.conn)?;
        self.rows += 1;
        Ok(v)
    }
}

/// An open atomic block: a transaction (BEGIN or the outermost SAVEPOINT) or a
/// savepoint inside one. Ended by [`LabConn::end_block`].
#[derive(Debug)]
#[must_use = "a block must be ended with end_block"]
pub struct Block {
    savepoint: Option<String>,
    /// The block began the transaction (BEGIN or the outermost SAVEPOINT).
    outermost: bool,
    started: i64,
    acquired_before: Option<i64>,
}

impl Block {
    pub fn is_nested(&self) -> bool {
        !self.outermost
    }

    /// When the transaction held the write lock before this block began.
    pub fn acquired_before(&self) -> Option<i64> {
        self.acquired_before
    }
}

impl LabConn {
    /// Opens a connection on the target's backend and applies the policy.
    /// `create` false never creates a database: a missing SQLite file is an
    /// error, never a new empty file.
    pub fn open(
        target: &DbTarget,
        policy: Arc<Policy>,
        create: bool,
    ) -> Result<LabConn, OpenError> {
        let (conn, engine) = match target {
            DbTarget::Sqlite(_) => {
                let (conn, engine) = sqlite::open(target, &policy, create)?;
                (conn, Box::new(engine) as Box<dyn Engine>)
            }
            DbTarget::Server(server) => {
                // A server database is made by `locklab migrate` (or `run`),
                // never by opening it; `create` does not apply.
                let (conn, engine) = server::open(server, &policy)?;
                (conn, Box::new(engine) as Box<dyn Engine>)
            }
        };
        Ok(LabConn {
            conn,
            engine,
            policy,
            manual: false,
            rollback_warnings: 0,
            depth: 0,
            txn: 0,
            txn_seq: 0,
            pending: Vec::new(),
            open: false,
        })
    }

    /// Which database this connection talks to.
    pub fn backend(&self) -> Kind {
        self.engine.kind()
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// How long a statement waits for a lock before it fails.
    pub fn busy_timeout(&self) -> Duration {
        self.engine.busy_timeout()
    }

    /// The lock wait of the last statement.
    pub fn busy_record(&self) -> BusyRecord {
        self.engine.busy_record()
    }

    /// Total time this connection waited for locks (zero where that cannot be
    /// measured; see [`LabConn::lock_wait_measured`]).
    pub fn total_lock_wait(&self) -> Duration {
        self.engine.total_lock_wait().unwrap_or_default()
    }

    /// Whether this backend's lock waits are measured by the lab.
    pub fn lock_wait_measured(&self) -> bool {
        self.engine.total_lock_wait().is_some()
    }

    /// The diesel connection, for reads outside the lab's entry points (tests,
    /// `check`). Writes go through the entry points below.
    pub fn diesel(&mut self) -> &mut Conn {
        &mut self.conn
    }

    /// Whether a transaction is open on this connection: the database's own
    /// view where it has one, else the lab's bookkeeping.
    pub fn in_transaction(&self) -> bool {
        self.engine.in_transaction().unwrap_or(self.open)
    }

    /// Whether the open transaction holds (or is committing with) the write
    /// lock, where the database says so (SQLite's SQLITE_TXN_WRITE).
    pub fn holds_write_lock(&self) -> bool {
        self.engine.holds_write_lock().unwrap_or(false)
    }

    /// The open transaction's id (0 when none).
    pub fn txn_id(&self) -> u64 {
        if self.in_transaction() {
            self.txn
        } else {
            0
        }
    }

    /// Switches Django's manual-transaction mode on or off (see the field).
    pub fn set_manual(&mut self, manual: bool) {
        self.manual = manual;
    }

    pub fn is_manual(&self) -> bool {
        self.manual
    }

    /// The journal mode of the file, read back (SQLite).
    pub fn journal_mode(&mut self) -> QueryResult<String> {
        sqlite::pragma_text(&mut self.conn, "PRAGMA journal_mode")
    }

    /// `PRAGMA synchronous`, read back, as a name (SQLite).
    pub fn synchronous(&mut self) -> QueryResult<String> {
        let n = sqlite::pragma_text(&mut self.conn, "PRAGMA synchronous")?;
        Ok(match n.as_str() {
            "0" => "off",
            "1" => "normal",
            "2" => "full",
            "3" => "extra",
            other => return Ok(other.to_string()),
        }
        .to_string())
    }

    /// Classifies a failed call from this connection's own error code. Must be
    /// called right after the failing call, before anything else runs on it.
    pub fn classify(&mut self, phase: Phase, err: &diesel::result::Error) -> DbError {
        self.engine.classify(&mut self.conn, phase, err)
    }

    fn acquired(&self) -> Option<i64> {
        self.engine.lock_acquired_at()
    }

    /// Wall-clock µs at which the open transaction (or the last autocommit
    /// statement) first held the write lock, if it did.
    pub fn lock_acquired_at(&self) -> Option<i64> {
        self.acquired()
    }

    fn times(&self, started: i64, acquired_before: Option<i64>, nested: bool) -> AttemptTimes {
        let acquired = self.acquired();
        AttemptTimes {
            started,
            // a nested attempt reports the lock only if it took it itself
            acquired: if nested && acquired_before.is_some() {
                None
            } else {
                acquired
            },
            ended: now_micros(),
            txn: self.txn,
            nested,
        }
    }

    fn new_txn(&mut self) {
        self.txn_seq += 1;
        self.txn = self.txn_seq;
        self.depth = 0;
        self.engine.reset_acquired();
    }

    /// Runs a statement that begins a transaction (BEGIN, or the engine's
    /// START TRANSACTION) and notes it open.
    fn exec_begin(&mut self, sql: &str) -> QueryResult<()> {
        self.conn.batch_execute(sql)?;
        self.open = true;
        Ok(())
    }

    /// Runs COMMIT and notes the transaction ended.
    fn exec_commit(&mut self) -> QueryResult<()> {
        self.conn.batch_execute("COMMIT")?;
        self.open = false;
        Ok(())
    }

    /// Ends whatever is open with ROLLBACK, forgetting its pending rows.
    pub(super) fn rollback_all(&mut self) {
        if self.in_transaction() {
            match self.conn.batch_execute("ROLLBACK") {
                Err(e) => log::warn!("rollback after a failed attempt failed too: {e}"),
                Ok(()) => self.after_rollback(),
            }
        }
        self.open = false;
        self.depth = 0;
        self.pending.clear();
    }

    /// Opens an atomic block, as Django's `atomic()` does: inside an open
    /// transaction a SAVEPOINT; in manual mode with none open, a SAVEPOINT
    /// (SQLite begins a deferred transaction; a server first begins one, as
    /// its driver does when autocommit is off); else BEGIN as the engine says.
    pub fn begin_block(&mut self) -> Result<Block, DbError> {
        let started = now_micros();
        let open = self.in_transaction();
        if !open {
            self.depth = 0;
            self.pending.clear();
        }
        if open || self.manual {
            if !open {
                self.new_txn();
                if !self.engine.savepoint_begins_transaction() {
                    let begin = self.engine.begin_sql(self.policy.txn_mode, true);
                    if let Err(e) = self.exec_begin(begin) {
                        let err = self.classify(Phase::Begin, &e);
                        self.rollback_all();
                        return Err(err);
                    }
                }
            }
            let acquired_before = self.acquired();
            let name = format!("lab_sp{}", self.depth);
            self.conn
                .batch_execute(&format!("SAVEPOINT {name}"))
                .map_err(|e| self.classify(Phase::Begin, &e))?;
            self.depth += 1;
            return Ok(Block {
                savepoint: Some(name),
                outermost: !open,
                started,
                acquired_before,
            });
        }
        self.new_txn();
        let begin = self.engine.begin_sql(self.policy.txn_mode, false);
        match self.exec_begin(begin) {
            Ok(()) => Ok(Block {
                savepoint: None,
                outermost: true,
                started,
                acquired_before: None,
            }),
            Err(e) => {
                let err = self.classify(Phase::Begin, &e);
                self.rollback_all();
                Err(err)
            }
        }
    }

    /// Ends a block. `commit` true releases the savepoint or commits; if that
    /// fails, the block is rolled back (as Django's `atomic()` does) and the
    /// error returned. `commit` false rolls the block back. Returns the rows
    /// that became durable.
    pub fn end_block(&mut self, block: Block, commit: bool) -> Result<Committed, DbError> {
        let _ = block.started;
        match (&block.savepoint, commit) {
            (Some(name), true) => {
                if block.outermost && !self.policy.txn_work.is_zero() {
                    std::thread::sleep(self.policy.txn_work);
                }
                match self
                    .conn
                    .batch_execute(&format!("RELEASE SAVEPOINT {name}"))
                {
                    Ok(()) => {
                        self.depth = self.depth.saturating_sub(1);
                        if self.in_transaction() {
                            Ok(Vec::new())
                        } else {
                            Ok(std::mem::take(&mut self.pending))
                        }
                    }
                    Err(e) => {
                        let phase = if block.outermost {
                            Phase::Commit
                        } else {
                            Phase::Body
                        };
                        let err = self.classify(phase, &e);
                        self.rollback_savepoint(name, block.outermost);
                        Err(err)
                    }
                }
            }
            (Some(name), false) => {
                self.rollback_savepoint(name, block.outermost);
                Ok(Vec::new())
            }
            (None, true) => {
                if !self.policy.txn_work.is_zero() {
                    // LAB_TXN_WORK: a slower stack's time inside the transaction.
                    std::thread::sleep(self.policy.txn_work);
                }
                match self.exec_commit() {
                    Ok(()) => Ok(std::mem::take(&mut self.pending)),
                    Err(e) => {
                        let err = self.classify(Phase::Commit, &e);
                        self.rollback_all();
                        Err(err)
                    }
                }
            }
            (None, false) => {
                self.rollback_all();
                Ok(Vec::new())
            }
        }
    }

    /// Reads the warning a ROLLBACK raised (MySQL's 1196 on MyISAM tables)
    /// and counts it: the rollback did not undo everything.
    fn after_rollback(&mut self) {
        if let Some((code, message)) = self.engine.rollback_warning(&mut self.conn) {
            self.rollback_warnings += 1;
            log::warn!("ROLLBACK raised warning {code}: {message}");
        }
    }

    /// Rollbacks that raised a warning since the last call (MySQL's 1196:
    /// non-transactional tables kept their changes).
    pub fn take_rollback_warnings(&mut self) -> u64 {
        std::mem::take(&mut self.rollback_warnings)
    }

    /// ROLLBACK TO and RELEASE a savepoint (Django's savepoint rollback); the
    /// rows written since it began are dropped from the pending ones.
    fn rollback_savepoint(&mut self, name: &str, outermost: bool) {
        if self.in_transaction() {
            match self
                .conn
                .batch_execute(&format!("ROLLBACK TO SAVEPOINT {name}"))
            {
                Err(e) => {
                    log::warn!("rolling back to savepoint {name} failed: {e}");
                    if outermost {
                        self.rollback_all();
                    }
                }
                Ok(()) => {
                    self.after_rollback();
                    if let Err(e) = self
                        .conn
                        .batch_execute(&format!("RELEASE SAVEPOINT {name}"))
                    {
                        log::warn!("releasing savepoint {name} failed: {e}");
                    }
                }
            }
        }
        self.depth = self.depth.saturating_sub(1);
        if outermost || !self.in_transaction() {
            self.pending.clear();
        }
    }

    /// One attempt at an atomic block: [`LabConn::begin_block`], `body`, then
    /// [`LabConn::end_block`]. Inside an open transaction it is a savepoint,
    /// so a failure rolls back only the savepoint and the transaction stays
    /// open. The class is read before any rollback. Retries and counting are
    /// the caller's ([`crate::ops`]).
    pub fn write_txn<T>(
        &mut self,
        op: &'static str,
        body: &mut dyn FnMut(&mut Tx<'_>) -> Result<T, TxError>,
    ) -> Result<(T, Committed, AttemptTimes), AttemptError> {
        let nested_at_start = self.in_transaction();
        let started = now_micros();
        if !nested_at_start {
            self.engine.reset_acquired();
        }
        let fail = |conn: &LabConn, error: AttemptFailure, acquired_before| AttemptError {
            error,
            times: conn.times(started, acquired_before, nested_at_start),
            rows: 0,
        };
        let block = match self.begin_block() {
            Ok(b) => b,
            Err(err) => return Err(fail(self, AttemptFailure::Db(err), None)),
        };
        let acquired_before = block.acquired_before;
        let mut tx = Tx {
            conn: &mut self.conn,
            rows: 0,
        };
        let result = body(&mut tx);
        let rows = tx.rows;
        let value = match result {
            Ok(v) => v,
            Err(TxError::Db(e)) => {
                let err = self.classify(Phase::Body, &e);
                let times = self.times(started, acquired_before, nested_at_start);
                let _ = self.end_block(block, false);
                return Err(AttemptError {
                    error: AttemptFailure::Db(err),
                    times,
                    rows: 0,
                });
            }
            Err(TxError::Abort(reason)) => {
                let _ = self.end_block(block, false);
                return Err(fail(self, AttemptFailure::Aborted(reason), acquired_before));
            }
        };
        if rows > 0 {
            self.pending.push((op, rows));
        }
        match self.end_block(block, true) {
            Ok(committed) => Ok((
                value,
                committed,
                self.times(started, acquired_before, nested_at_start),
            )),
            Err(err) => Err(fail(self, AttemptFailure::Db(err), acquired_before)),
        }
    }

    /// Begins a transaction as the policy says and leaves it open, for code that
    /// must split one transaction over several steps (a test interleaving two
    /// schedulers' claim phases). Pair with [`LabConn::commit`] or
    /// [`LabConn::rollback`].
    pub fn begin(&mut self) -> Result<(), DbError> {
        // The block is ended by commit() or rollback(), which end whatever
        // transaction is open.
        let _ = self.begin_block()?;
        Ok(())
    }

    /// Commits the open transaction (of [`LabConn::begin`] or an implicit
    /// one); rolls back if the commit fails.
    pub fn commit(&mut self) -> Result<Committed, DbError> {
        match self.exec_commit() {
            Ok(()) => {
                self.depth = 0;
                Ok(std::mem::take(&mut self.pending))
            }
            Err(e) => {
                let err = self.classify(Phase::Commit, &e);
                self.rollback_all();
                Err(err)
            }
        }
    }

    /// Django's sync in manual mode (`set_autocommit(True)` then `False`):
    /// COMMIT if a transaction is open. A failed COMMIT is **not** rolled
    /// back: the transaction stays open, holding its locks, and the next
    /// sync tries again. Switches manual mode on. Returns the rows that became
    /// durable, and the times of the attempt when there was one.
    pub fn sync(&mut self) -> Result<Option<(Committed, AttemptTimes)>, (DbError, AttemptTimes)> {
        self.manual = true;
        if !self.in_transaction() {
            self.pending.clear();
            return Ok(None);
        }
        let started = now_micros();
        match self.exec_commit() {
            Ok(()) => {
                self.depth = 0;
                let times = self.times(started, None, false);
                Ok(Some((std::mem::take(&mut self.pending), times)))
            }
            Err(e) => {
                let err = self.classify(Phase::Commit, &e);
                if self.engine.in_transaction().is_none() {
                    // A server ends a transaction whose COMMIT failed (rolled
                    // back); SQLite's stays open, and its handle says so.
                    self.open = false;
                    self.pending.clear();
                }
                Err((err, self.times(started, None, false)))
            }
        }
    }

    /// Rolls back an open transaction, if any (its pending rows are lost).
    pub fn rollback(&mut self) {
        self.rollback_all();
    }

    /// Rows written inside the open transaction and not committed yet.
    pub fn pending_rows(&self) -> u64 {
        self.pending.iter().map(|(_, n)| n).sum()
    }

    /// One attempt of statements with no block of their own: each autocommits
    /// when no transaction is open; inside an open transaction they join it.
    /// In manual mode with none open, the first statement begins one
    /// implicitly (Python's sqlite3 issues BEGIN before a write, as the policy's
    /// transaction mode says), and it stays open until [`LabConn::sync`].
    pub fn autocommit<T>(
        &mut self,
        op: &'static str,
        body: &mut dyn FnMut(&mut Tx<'_>) -> Result<T, TxError>,
    ) -> Result<(T, Committed, AttemptTimes), AttemptError> {
        let started = now_micros();
        let was_open = self.in_transaction();
        if !was_open {
            self.pending.clear();
            self.depth = 0;
            if self.manual {
                self.new_txn();
                let begin = self.engine.begin_sql(self.policy.txn_mode, true);
                if let Err(e) = self.exec_begin(begin) {
                    let err = self.classify(Phase::Begin, &e);
                    self.rollback_all();
                    return Err(AttemptError {
                        error: AttemptFailure::Db(err),
                        times: self.times(started, None, false),
                        rows: 0,
                    });
                }
            } else {
                self.txn = 0;
                self.engine.reset_acquired();
            }
        }
        let joins = self.in_transaction();
        let acquired_before = if joins { self.acquired() } else { None };
        let mut tx = Tx {
            conn: &mut self.conn,
            rows: 0,
        };
        let result = body(&mut tx);
        let rows = tx.rows;
        // Rows of statements that ran inside a transaction wait for its
        // commit; autocommitted ones are durable now.
        let committed: Committed = if joins {
            if rows > 0 {
                self.pending.push((op, rows));
            }
            Vec::new()
        } else if rows > 0 {
            vec![(op, rows)]
        } else {
            Vec::new()
        };
        let times = |conn: &LabConn| conn.times(started, acquired_before, was_open);
        match result {
            Ok(v) => Ok((v, committed, times(self))),
            Err(TxError::Db(e)) => {
                let err = self.classify(Phase::Autocommit, &e);
                Err(AttemptError {
                    error: AttemptFailure::Db(err),
                    times: times(self),
                    rows: committed.iter().map(|(_, n)| n).sum(),
                })
            }
            Err(TxError::Abort(reason)) => Err(AttemptError {
                error: AttemptFailure::Aborted(reason),
                times: times(self),
                rows: committed.iter().map(|(_, n)| n).sum(),
            }),
        }
    }

    /// One read-only attempt (SELECTs; inside the open transaction if any).
    pub fn read<T>(
        &mut self,
        body: &mut dyn FnMut(&mut Conn) -> QueryResult<T>,
    ) -> Result<T, DbError> {
        match body(&mut self.conn) {
            Ok(v) => Ok(v),
            Err(e) => Err(self.classify(Phase::Read, &e)),
        }
    }

    /// Runs raw SQL in autocommit mode and classifies a failure: for tests and
    /// for the lab's own maintenance statements. Not for model queries.
    pub fn execute_raw(&mut self, sql: &str) -> Result<(), DbError> {
        self.conn
            .batch_execute(sql)
            .map_err(|e| self.classify(Phase::Autocommit, &e))
    }
}
