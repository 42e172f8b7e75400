//! Operations: the unit the lab counts. An operation is one logical piece of work
//! (one HTTP create, one claim step, one event save, one sync); it runs one or
//! more attempts, each under the retry policy.
//!
//! The calls mirror what an ORM does on SQLite, so that each strategy can say
//! exactly where its transactions begin and end:
//!
//! - [`Op::write`] (also [`Op::save`]): an atomic block around `body`, retried as
//!   a unit. With no transaction open it is a transaction (BEGIN as the
//!   policy's mode says, or a SAVEPOINT in Django's manual mode); inside an open
//!   one it is a savepoint, and a retry happens *inside* the still-open
//!   transaction, as Toaster's patched save does.
//! - [`Op::block`]: an outer `atomic()` block whose body reads and saves; its
//!   saves retry inside it; its COMMIT is not retried.
//! - [`Op::autocommit`]: statements that autocommit (or join the open
//!   transaction), retried as a unit.
//! - [`Op::statement`]: statements that no policy retries (a queryset update,
//!   a bulk insert); in manual mode they begin a transaction that stays open.
//! - [`Op::read`] runs reads, retried as the policy says.
//! - [`Op::sync`]: Django's manual-mode sync: COMMIT if open; a failed COMMIT
//!   leaves the transaction open.
//!
//! Every failed attempt is counted under its class, logged once with class,
//! waited_ms and op, and either retried (counted) or the operation gives up. An
//! operation that rolls back on purpose (a lost race, nothing to do) is counted
//! as rolled back, never as ok. An operation that retries three times with one
//! class inside one transaction, or runs longer than twice the busy timeout,
//! is a stall ([`crate::stats::Stall`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::Conn;
use diesel::QueryResult;

use crate::db::{AttemptError, AttemptFailure, AttemptTimes, Block, Committed, LabConn, Tx};
use crate::error::{DbError, LockClass, OpError, TxError};
use crate::settings::RetryPolicy;
use crate::stats::{Outcome, Stats};
use crate::strategy::retry::{self, Call, Failure};
use crate::trace::{Attempt, Trace};

pub use crate::strategy::retry::{backoff_pause, TOASTER_RETRY_SLEEP};

/// Retries with one class inside one open transaction that make a stall.
pub const STALL_RETRIES: u32 = 3;

/// What every operation of a process shares: its name, stats, trace and the
/// flag that ends retry loops at shutdown.
#[derive(Debug, Clone)]
pub struct Lab {
    pub process: String,
    pub stats: Arc<Stats>,
    pub trace: Option<Arc<Trace>>,
    /// Set at shutdown: no operation is retried any more.
    pub stopping: Arc<AtomicBool>,
    /// Set when the process must not wait any longer (a grace period after
    /// the shutdown began): busy handlers give up at their next call.
    pub abandon: Arc<AtomicBool>,
    /// What happens after a failed attempt (`LAB_RETRY`): the process's
    /// choice, not the connection's.
    pub retry: RetryPolicy,
    /// How long `backoff` keeps trying one operation (`LAB_RETRY_DEADLINE`).
    pub retry_deadline: Duration,
}

static OP_IDS: AtomicU64 = AtomicU64::new(1);

impl Lab {
    pub fn new(process: impl Into<String>) -> Lab {
        let process = process.into();
        Lab {
            stats: Arc::new(Stats::new(process.clone())),
            process,
            trace: None,
            stopping: Arc::new(AtomicBool::new(false)),
            abandon: Arc::new(AtomicBool::new(false)),
            retry: RetryPolicy::None,
            retry_deadline: Duration::from_secs(30),
        }
    }

    /// The retry policy of every operation of this process.
    pub fn with_retry(mut self, retry: RetryPolicy, deadline: Duration) -> Lab {
        self.retry = retry;
        self.retry_deadline = deadline;
        self
    }

    pub fn with_trace(mut self, trace: Option<Arc<Trace>>) -> Lab {
        self.trace = trace;
        self
    }

    /// The flag to put in the connection policy, so that busy handlers give up
    /// once this process abandons its waits.
    pub fn stop_flag(&self) -> crate::db::StopFlag {
        crate::db::StopFlag(self.abandon.clone())
    }

    /// Stops at once: no retry, and no further wait for a lock.
    pub fn stop_now(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.abandon.store(true, Ordering::SeqCst);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Runs one operation and counts it: ok, rolled back, or gave up.
    pub fn op<T>(
        &self,
        name: &'static str,
        f: impl FnOnce(&mut Op<'_>) -> Result<T, OpError>,
    ) -> Result<T, OpError> {
        let id = OP_IDS.fetch_add(1, Ordering::Relaxed);
        self.stats.op_started(name, id);
        let mut op = Op {
            lab: self,
            name,
            id,
            started: Instant::now(),
            attempt: 0,
            same_class: None,
            retried: false,
        };
        let result = f(&mut op);
        let outcome = match &result {
            Ok(_) => Outcome::Ok,
            Err(OpError::Aborted(_)) => Outcome::RolledBack,
            Err(OpError::Db(_)) => Outcome::GaveUp,
        };
        let abandoned = self.is_stopping() && op.retried && outcome == Outcome::GaveUp;
        self.stats
            .op_finished(name, id, outcome, op.started.elapsed(), abandoned);
        result
    }

    fn trace(&self, op: &str, a: Attempt<'_>) {
        if let Some(trace) = &self.trace {
            trace.record(op, a);
        }
    }
}

/// A running operation.
pub struct Op<'a> {
    lab: &'a Lab,
    name: &'static str,
    id: u64,
    started: Instant,
    attempt: u32,
    /// Consecutive failures with one class inside one open transaction:
    /// (class, transaction id, count).
    same_class: Option<(LockClass, u64, u32)>,
    retried: bool,
}

impl<'a> Op<'a> {
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The process's lab, to run a separate operation (a cleanup that must be
    /// counted on its own).
    pub fn lab(&self) -> &'a Lab {
        self.lab
    }

    /// An atomic block around `body`, retried as the policy says. See the
    /// module doc: a transaction, or a savepoint inside the open one.
    pub fn write<T>(
        &mut self,
        conn: &mut LabConn,
        mut body: impl FnMut(&mut Tx<'_>) -> Result<T, TxError>,
    ) -> Result<T, OpError> {
        loop {
            let before = conn.total_lock_wait();
            let result = conn.write_txn(self.name, &mut body);
            self.lock_waited(conn, before);
            match result {
                Ok((value, committed, times)) => {
                    self.committed(&committed);
                    self.trace_ok(&times, if times.nested { "savepoint" } else { "txn" });
                    return Ok(value);
                }
                Err(e) => self.attempt_failed(conn, e, Call::Save, "txn")?,
            }
        }
    }

    /// A model save, as Toaster's patched `save()`: the same as
    /// [`Op::write`], named for the strategies that model Django.
    pub fn save<T>(
        &mut self,
        conn: &mut LabConn,
        body: impl FnMut(&mut Tx<'_>) -> Result<T, TxError>,
    ) -> Result<T, OpError> {
        self.write(conn, body)
    }

    /// Statements that autocommit (or join the open transaction), retried as a
    /// unit. Rows of statements that committed before a failure stay committed.
    pub fn autocommit<T>(
        &mut self,
        conn: &mut LabConn,
        mut body: impl FnMut(&mut Tx<'_>) -> Result<T, TxError>,
    ) -> Result<T, OpError> {
        loop {
            let before = conn.total_lock_wait();
            let result = conn.autocommit(self.name, &mut body);
            self.lock_waited(conn, before);
            match result {
                Ok((value, committed, times)) => {
                    self.committed(&committed);
                    self.trace_ok(&times, "autocommit");
                    return Ok(value);
                }
                Err(e) => self.attempt_failed(conn, e, Call::Save, "autocommit")?,
            }
        }
    }

    /// Statements that no policy retries: a queryset update or delete, a bulk
    /// insert. In manual mode with no transaction open, the first one begins
    /// a transaction that stays open until [`Op::sync`].
    pub fn statement<T>(
        &mut self,
        conn: &mut LabConn,
        mut body: impl FnMut(&mut Tx<'_>) -> Result<T, TxError>,
    ) -> Result<T, OpError> {
        let before = conn.total_lock_wait();
        let result = conn.autocommit(self.name, &mut body);
        self.lock_waited(conn, before);
        match result {
            Ok((value, committed, times)) => {
                self.committed(&committed);
                self.trace_ok(&times, "statement");
                Ok(value)
            }
            Err(e) => {
                self.attempt_failed(conn, e, Call::Statement, "statement")?;
                Err(OpError::Aborted(
                    "unreachable: statements are not retried".into(),
                ))
            }
        }
    }

    /// Reads, retried as the policy says (Toaster's policy never retries a
    /// read).
    pub fn read<T>(
        &mut self,
        conn: &mut LabConn,
        mut body: impl FnMut(&mut Conn) -> QueryResult<T>,
    ) -> Result<T, OpError> {
        loop {
            let before = conn.total_lock_wait();
            let result = conn.read(&mut body);
            self.lock_waited(conn, before);
            match result {
                Ok(v) => return Ok(v),
                Err(e) => self.after_failure(conn, &e, Call::Read)?,
            }
        }
    }

    /// An outer atomic block: BEGIN (or a SAVEPOINT), `body`, COMMIT. A
    /// failed BEGIN is tried again under `backoff` (nothing ran yet); the
    /// body's saves retry inside the open block. A failed COMMIT rolls the
    /// whole block back: under `backoff` (a careful application) the
    /// outermost block then runs again from BEGIN, within the deadline; the
    /// other policies do not retry it (Django's atomic() does not).
    /// `TxError::Abort` from the body (or an [`OpError::Aborted`]) rolls the
    /// block back and the operation is counted as rolled back.
    pub fn block<T>(
        &mut self,
        conn: &mut LabConn,
        mut body: impl FnMut(&mut Op<'_>, &mut LabConn) -> Result<T, OpError>,
    ) -> Result<T, OpError> {
        // A failed BEGIN ran nothing, and a failed COMMIT rolled everything
        // back, so trying the block again is safe: `backoff` does; `none`
        // and Toaster's patched save (which retries saves, not blocks) do not.
        let retry_call = if self.lab.retry == RetryPolicy::Backoff {
            Call::Save
        } else {
            Call::Statement
        };
        loop {
            let mut before = conn.total_lock_wait();
            let mut started = crate::types::now_micros();
            let block = loop {
                match conn.begin_block() {
                    Ok(b) => break b,
                    Err(e) => {
                        self.lock_waited(conn, before);
                        self.trace_failed(started, conn, &e, "txn");
                        self.after_failure(conn, &e, retry_call)?;
                        if retry_call == Call::Statement {
                            return Err(OpError::Db(e));
                        }
                        before = conn.total_lock_wait();
                        started = crate::types::now_micros();
                    }
                }
            };
            self.lock_waited(conn, before);
            let nested = block.is_nested();
            let result = body(self, conn);
            let before = conn.total_lock_wait();
            let ended = self.end(conn, block, result.is_ok());
            self.lock_waited(conn, before);
            let kind = if nested { "savepoint" } else { "txn" };
            match (result, ended) {
                (Ok(v), Ok((committed, times))) => {
                    self.committed(&committed);
                    self.trace_ok(&AttemptTimes { started, ..times }, kind);
                    return Ok(v);
                }
                (Ok(_), Err((e, times))) => {
                    self.lab.trace(
                        self.name,
                        Attempt::failed(
                            kind,
                            &AttemptTimes { started, ..times },
                            &e,
                            self.attempt + 1,
                        ),
                    );
                    // Only the outermost block starts over: a savepoint's
                    // enclosing transaction may be gone with it.
                    let call = if nested { Call::Statement } else { retry_call };
                    self.after_failure(conn, &e, call)?;
                    if call == Call::Statement {
                        return Err(OpError::Db(e));
                    }
                }
                (Err(e), _) => {
                    if let Some(trace) = &self.lab.trace {
                        let times = AttemptTimes {
                            started,
                            ended: crate::types::now_micros(),
                            txn: conn.txn_id(),
                            nested,
                            acquired: None,
                        };
                        trace.record(self.name, Attempt::rolled_back(kind, &times));
                    }
                    return Err(e);
                }
            }
        }
    }

    fn end(
        &mut self,
        conn: &mut LabConn,
        block: Block,
        commit: bool,
    ) -> Result<(Committed, AttemptTimes), (DbError, AttemptTimes)> {
        let nested = block.is_nested();
        let txn = conn.txn_id();
        // A nested block reports the lock only if it took it itself.
        let acquired = match (nested, block.acquired_before()) {
            (true, Some(_)) => None,
            _ => conn.lock_acquired_at(),
        };
        let r = conn.end_block(block, commit);
        let times = AttemptTimes {
            started: 0,
            acquired,
            ended: crate::types::now_micros(),
            txn,
            nested,
        };
        match r {
            Ok(c) => Ok((c, times)),
            Err(e) => Err((e, times)),
        }
    }

    /// Commits a transaction [`LabConn::begin`] left open (a claim split over
    /// two calls). Not retried; a failure is counted and rolled back.
    pub fn commit_open(&mut self, conn: &mut LabConn) -> Result<(), OpError> {
        let started = crate::types::now_micros();
        let txn = conn.txn_id();
        let before = conn.total_lock_wait();
        let result = conn.commit();
        self.lock_waited(conn, before);
        let times = AttemptTimes {
            started,
            acquired: None,
            ended: crate::types::now_micros(),
            txn,
            nested: false,
        };
        match result {
            Ok(committed) => {
                self.committed(&committed);
                self.trace_ok(&times, "txn");
                Ok(())
            }
            Err(e) => {
                self.lab.trace(
                    self.name,
                    Attempt::failed("txn", &times, &e, self.attempt + 1),
                );
                self.after_failure(conn, &e, Call::Statement)?;
                Err(OpError::Db(e))
            }
        }
    }

    /// Django's manual-mode sync: COMMIT if a transaction is open. A failed
    /// COMMIT is counted, not retried, and leaves the transaction open; the
    /// open transaction is tracked as a stall while its commits keep failing.
    /// Returns whether there was anything to commit.
    pub fn sync(&mut self, conn: &mut LabConn) -> Result<bool, OpError> {
        let txn = conn.txn_id();
        let before = conn.total_lock_wait();
        let result = conn.sync();
        self.lock_waited(conn, before);
        match result {
            Ok(None) => Ok(false),
            Ok(Some((committed, times))) => {
                self.committed(&committed);
                self.trace_ok(&times, "sync");
                self.lab.stats.txn_settled(txn, false);
                Ok(true)
            }
            Err((e, times)) => {
                self.lab.trace(
                    self.name,
                    Attempt::failed("sync", &times, &e, self.attempt + 1),
                );
                self.lab.stats.txn_commit_failed(txn, self.name, e.class);
                self.after_failure(conn, &e, Call::Statement)?;
                Err(OpError::Db(e))
            }
        }
    }

    fn lock_waited(&self, conn: &mut LabConn, before: Duration) {
        self.lab
            .stats
            .lock_waited(conn.total_lock_wait().saturating_sub(before));
        let warned = conn.take_rollback_warnings();
        if warned > 0 {
            self.lab.stats.rollback_warned(warned);
        }
    }

    fn committed(&self, committed: &Committed) {
        for (op, rows) in committed {
            self.lab.stats.rows_committed(op, *rows);
        }
    }

    fn trace_ok(&self, times: &AttemptTimes, kind: &str) {
        self.lab
            .trace(self.name, Attempt::ok(kind, times, self.attempt));
    }

    fn trace_failed(&self, started: i64, conn: &LabConn, e: &DbError, kind: &str) {
        let times = AttemptTimes {
            started,
            acquired: None,
            ended: crate::types::now_micros(),
            txn: conn.txn_id(),
            nested: false,
        };
        self.lab.trace(
            self.name,
            Attempt::failed(kind, &times, e, self.attempt + 1),
        );
    }

    /// A failed attempt of a write or statement: rows that committed anyway are
    /// counted, the attempt is traced, then counted and retried or given up.
    fn attempt_failed(
        &mut self,
        conn: &LabConn,
        e: AttemptError,
        call: Call,
        kind: &str,
    ) -> Result<(), OpError> {
        let AttemptError { error, times, rows } = e;
        self.lab.stats.rows_committed(self.name, rows);
        let kind = if times.nested { "savepoint" } else { kind };
        match error {
            AttemptFailure::Aborted(reason) => {
                self.lab
                    .trace(self.name, Attempt::rolled_back(kind, &times));
                Err(OpError::Aborted(reason))
            }
            AttemptFailure::Db(e) => {
                self.lab.trace(
                    self.name,
                    Attempt::failed(kind, &times, &e, self.attempt + 1),
                );
                self.after_failure(conn, &e, call)
            }
        }
    }

    /// Counts and logs a failed attempt, then either sleeps before the next one
    /// (Ok) or gives up (Err).
    fn after_failure(&mut self, conn: &LabConn, e: &DbError, call: Call) -> Result<(), OpError> {
        self.attempt += 1;
        let stats = &self.lab.stats;
        stats.attempt_failed(self.name, e.class);
        // A retry inside a transaction that stays open: count repeats of one
        // class, the mark of a stall.
        let txn = conn.txn_id();
        let repeats = if txn != 0 {
            let n = match self.same_class {
                Some((c, t, n)) if c == e.class && t == txn => n + 1,
                _ => 1,
            };
            self.same_class = Some((e.class, txn, n));
            n
        } else {
            self.same_class = None;
            0
        };
        let pause = if self.lab.is_stopping() {
            None
        } else {
            retry::pause(
                self.lab.retry,
                self.lab.retry_deadline,
                &Failure {
                    class: e.class,
                    attempt: self.attempt,
                    spent: self.started.elapsed(),
                    call,
                    disk: e.is_disk(),
                },
            )
        };
        stats.op_failed_attempt(self.id, e.class, repeats, pause.is_some());
        let what = match pause {
            Some(p) => format!("retrying in {}ms", p.as_millis()),
            None if self.lab.is_stopping() => "giving up: shutting down".to_string(),
            None => "giving up".to_string(),
        };
        let inside = if repeats > 0 {
            format!(" txn={txn} same_class_in_txn={repeats}")
        } else {
            String::new()
        };
        // An error that is not a lock says what SQLite said, and what it means.
        let said = if e.class == crate::error::LockClass::Other {
            match e.hint() {
                Some(h) => format!(" ({}: {h})", e.message),
                None => format!(" ({})", e.message),
            }
        } else {
            String::new()
        };
        log::warn!(
            "{}: {} failed class={} waited_ms={:.1} op={} attempt={}{} {}{}: {}",
            self.lab.process,
            match e.phase {
                crate::error::Phase::Begin => "begin",
                crate::error::Phase::Commit => "commit",
                crate::error::Phase::Read => "read",
                crate::error::Phase::Body | crate::error::Phase::Autocommit => "statement",
            },
            e.class,
            e.waited_ms(),
            self.name,
            self.attempt,
            inside,
            match e.server_code {
                Some(c) => format!("server_code={c}"),
                None => format!("code={}", e.extended_code),
            },
            said,
            what
        );
        match pause {
            Some(p) => {
                stats.retried(self.name);
                self.retried = true;
                sleep_unless_stopping(p, &self.lab.stopping);
                Ok(())
            }
            None => Err(OpError::Db(e.clone())),
        }
    }
}

/// Sleeps, waking early when the process is asked to stop.
pub fn sleep_unless_stopping(d: Duration, stopping: &AtomicBool) {
    let end = Instant::now() + d;
    while !stopping.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= end {
            break;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}
