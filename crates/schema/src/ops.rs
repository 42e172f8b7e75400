//! Operations: the unit the lab counts. An operation is one logical piece of work
//! (one HTTP create, one claim, one event write or batch); it runs one or more
//! transactions, each under the retry policy.
//!
//! ```text
//! lab.op("create_request", |op| {
//!     let project = op.autocommit(conn, |tx| Project::get_or_create(tx.conn(), name))?;
//!     op.write(conn, |tx| { ...; Ok(ids) })
//! })
//! ```
//!
//! Every failed attempt is counted under its class, logged once with class,
//! waited_ms and op, and either retried (counted) or the operation gives up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use rand::Rng;

use crate::db::{AttemptError, AttemptFailure, LabConn, Tx};
use crate::error::{DbError, OpError, TxError};
use crate::settings::RetryPolicy;
use crate::stats::{Outcome, Stats};
use crate::trace::Trace;

/// Toaster's patched save sleeps this long between tries.
pub const TOASTER_RETRY_SLEEP: Duration = Duration::from_millis(500);

/// What every operation of a process shares: its name, stats, trace and the
/// flag that ends retry loops at shutdown.
#[derive(Debug, Clone)]
pub struct Lab {
    pub process: String,
    pub stats: Arc<Stats>,
    pub trace: Option<Arc<Trace>>,
    pub stopping: Arc<AtomicBool>,
}

impl Lab {
    pub fn new(process: impl Into<String>) -> Lab {
        let process = process.into();
        Lab {
            stats: Arc::new(Stats::new(process.clone())),
            process,
            trace: None,
            stopping: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn with_trace(mut self, trace: Option<Arc<Trace>>) -> Lab {
        self.trace = trace;
        self
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Runs one operation and counts it: ok, aborted (counted as ok) or gave up.
    pub fn op<T>(
        &self,
        name: &'static str,
        f: impl FnOnce(&mut Op<'_>) -> Result<T, OpError>,
    ) -> Result<T, OpError> {
        self.stats.op_started(name);
        let mut op = Op {
            lab: self,
            name,
            started: Instant::now(),
        };
        let result = f(&mut op);
        let outcome = match &result {
            Ok(_) => Outcome::Ok,
            Err(OpError::Aborted(_)) => Outcome::Aborted,
            Err(OpError::Db(_)) => Outcome::GaveUp,
        };
        self.stats.op_finished(name, outcome, op.started.elapsed());
        result
    }
}

/// A running operation.
pub struct Op<'a> {
    lab: &'a Lab,
    name: &'static str,
    started: Instant,
}

enum Kind {
    Txn,
    Autocommit,
}

impl Op<'_> {
    /// A write transaction, begun as the policy's transaction mode says, retried
    /// as its retry policy says.
    pub fn write<T>(
        &mut self,
        conn: &mut LabConn,
        body: impl FnMut(&mut Tx<'_>) -> Result<T, TxError>,
    ) -> Result<T, OpError> {
        self.attempts(conn, Kind::Txn, body)
    }

    /// Statements in autocommit mode, retried as a unit. Rows of statements that
    /// committed before a failure stay committed (and counted).
    pub fn autocommit<T>(
        &mut self,
        conn: &mut LabConn,
        body: impl FnMut(&mut Tx<'_>) -> Result<T, TxError>,
    ) -> Result<T, OpError> {
        self.attempts(conn, Kind::Autocommit, body)
    }

    /// Read-only statements in autocommit mode, retried under the policy.
    pub fn read<T>(
        &mut self,
        conn: &mut LabConn,
        mut body: impl FnMut(&mut SqliteConnection) -> QueryResult<T>,
    ) -> Result<T, OpError> {
        let mut attempt = 0u32;
        loop {
            let before = conn.total_lock_wait();
            let result = conn.read(&mut body);
            self.lab
                .stats
                .lock_waited(conn.total_lock_wait().saturating_sub(before));
            match result {
                Ok(v) => return Ok(v),
                Err(e) => self.after_failure(conn, &e, &mut attempt)?,
            }
        }
    }

    fn attempts<T>(
        &mut self,
        conn: &mut LabConn,
        kind: Kind,
        mut body: impl FnMut(&mut Tx<'_>) -> Result<T, TxError>,
    ) -> Result<T, OpError> {
        let mut attempt = 0u32;
        let kind_name = match kind {
            Kind::Txn => "txn",
            Kind::Autocommit => "autocommit",
        };
        loop {
            let before = conn.total_lock_wait();
            let result = match kind {
                Kind::Txn => conn.write_txn(&mut body),
                Kind::Autocommit => conn.autocommit(&mut body),
            };
            self.lab
                .stats
                .lock_waited(conn.total_lock_wait().saturating_sub(before));
            match result {
                Ok((value, rows, times)) => {
                    self.lab.stats.rows_committed(self.name, rows);
                    if let Some(trace) = &self.lab.trace {
                        trace.record(self.name, kind_name, &times, "commit", None);
                    }
                    return Ok(value);
                }
                Err(AttemptError { error, times, rows }) => {
                    self.lab.stats.rows_committed(self.name, rows);
                    match error {
                        AttemptFailure::Aborted(reason) => {
                            if let Some(trace) = &self.lab.trace {
                                trace.record(self.name, kind_name, &times, "rollback", None);
                            }
                            return Err(OpError::Aborted(reason));
                        }
                        AttemptFailure::Db(e) => {
                            if let Some(trace) = &self.lab.trace {
                                trace.record(self.name, kind_name, &times, "failed", Some(e.class));
                            }
                            self.after_failure(conn, &e, &mut attempt)?;
                        }
                    }
                }
            }
        }
    }

    /// Counts and logs a failed attempt, then either sleeps before the next one
    /// (Ok) or gives up (Err).
    fn after_failure(
        &mut self,
        conn: &LabConn,
        e: &DbError,
        attempt: &mut u32,
    ) -> Result<(), OpError> {
        *attempt += 1;
        let stats = &self.lab.stats;
        stats.attempt_failed(self.name, e.class);
        let policy = conn.policy();
        let pause = match policy.retry {
            _ if !e.class.is_transient() => None,
            _ if self.lab.is_stopping() => None,
            RetryPolicy::None => None,
            RetryPolicy::Toaster => Some(TOASTER_RETRY_SLEEP),
            RetryPolicy::Backoff => {
                let spent = self.started.elapsed();
                let left = policy.retry_deadline.saturating_sub(spent);
                if left.is_zero() {
                    None
                } else {
                    Some(backoff_pause(*attempt).min(left))
                }
            }
        };
        let what = match pause {
            Some(p) => format!("retrying in {}ms", p.as_millis()),
            None => "giving up".to_string(),
        };
        log::warn!(
            "{}: {} failed class={} waited_ms={:.1} op={} attempt={} code={}: {}",
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
            attempt,
            e.extended_code,
            what
        );
        match pause {
            Some(p) => {
                stats.retried(self.name);
                sleep_unless_stopping(p, &self.lab.stopping);
                Ok(())
            }
            None => Err(OpError::Db(e.clone())),
        }
    }
}

/// Jittered exponential backoff: 10 ms doubling to 1 s, each pause drawn from
/// [d/2, d).
pub fn backoff_pause(attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(7);
    let d = Duration::from_millis(10 << exp).min(Duration::from_secs(1));
    let half = d / 2;
    let jitter = rand::rng().random_range(0..=half.as_micros() as u64);
    half + Duration::from_micros(jitter)
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
