//! The lock trace: one JSON line per attempt, buffered.
//!
//! Each line records the process, the operation, what kind of attempt it was
//! (`txn`, `savepoint`, `autocommit`, `statement`, `sync`), the transaction it
//! ran in (so retries inside one open transaction share a `txn`), when it
//! began waiting, when the write lock was really obtained (for a deferred
//! transaction: when its first write returned, not when BEGIN did), when it
//! ended, and how: commit, rollback (on purpose) or failed with a class, the
//! phase that failed, and the time the busy handler waited. Times are
//! wall-clock microseconds since the epoch, so traces of several processes
//! compare. `locklab timeline` draws them; tests read them.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::db::AttemptTimes;
use crate::error::{DbError, LockClass};

/// One line of the trace. Fields are added, never renamed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceEvent {
    pub process: String,
    pub op: String,
    /// `txn`, `savepoint`, `autocommit`, `statement` or `sync`.
    pub kind: String,
    pub wait_start_us: i64,
    pub acquired_us: Option<i64>,
    pub end_us: i64,
    /// `commit`, `rollback` (on purpose) or `failed`.
    pub outcome: String,
    pub class: Option<LockClass>,
    /// The transaction (per process and connection; 0: autocommit).
    #[serde(default)]
    pub txn: u64,
    /// Which attempt of the operation (1 = the first).
    #[serde(default)]
    pub attempt: u32,
    /// Where a failed attempt failed: begin, body, commit, autocommit, read.
    #[serde(default)]
    pub phase: Option<String>,
    /// How long the busy handler waited during the failing statement.
    #[serde(default)]
    pub waited_ms: Option<f64>,
    /// SQLite's extended result code of a failed attempt.
    #[serde(default)]
    pub code: Option<i32>,
    /// A server's code of a failed attempt: PostgreSQL's SQLSTATE or MySQL's
    /// errno, as text (added field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_code: Option<String>,
    /// What a poll saw (kind `poll`, added field): a poller's reads inside
    /// its long transaction, to show a snapshot that does not move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen: Option<PollSeen>,
}

/// What one poll of runbuilds saw inside its poll transaction
/// (`LAB_POLL_TXN`): the queue and the free environments, as its snapshot
/// shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollSeen {
    /// Queued requests.
    pub queued: u64,
    /// The highest request id it can see (any state): new requests that
    /// others committed raise it, unless the snapshot is stale.
    pub max_request_id: Option<i64>,
    /// Free environments.
    pub free: u64,
    /// When the poll transaction began (its first poll).
    pub txn_started_us: i64,
}

/// What an attempt did, for [`Trace::record`].
#[derive(Debug, Clone)]
pub struct Attempt<'a> {
    pub kind: &'a str,
    pub times: AttemptTimes,
    pub outcome: &'static str,
    pub error: Option<&'a DbError>,
    pub attempt: u32,
}

impl<'a> Attempt<'a> {
    pub fn ok(kind: &'a str, times: &AttemptTimes, failed_before: u32) -> Attempt<'a> {
        Attempt {
            kind,
            times: *times,
            outcome: "commit",
            error: None,
            attempt: failed_before + 1,
        }
    }

    pub fn failed(
        kind: &'a str,
        times: &AttemptTimes,
        error: &'a DbError,
        attempt: u32,
    ) -> Attempt<'a> {
        Attempt {
            kind,
            times: *times,
            outcome: "failed",
            error: Some(error),
            attempt,
        }
    }

    pub fn rolled_back(kind: &'a str, times: &AttemptTimes) -> Attempt<'a> {
        Attempt {
            kind,
            times: *times,
            outcome: "rollback",
            error: None,
            attempt: 0,
        }
    }
}

/// A buffered JSONL writer shared by a process's threads.
#[derive(Debug)]
pub struct Trace {
    process: String,
    out: Mutex<BufWriter<File>>,
}

impl Trace {
    /// Creates (or truncates) the trace file.
    pub fn create(path: &Path, process: impl Into<String>) -> std::io::Result<Trace> {
        let file = File::create(path)?;
        Ok(Trace {
            process: process.into(),
            out: Mutex::new(BufWriter::with_capacity(256 * 1024, file)),
        })
    }

    pub fn record(&self, op: &str, a: Attempt<'_>) {
        let event = TraceEvent {
            process: self.process.clone(),
            op: op.to_string(),
            kind: a.kind.to_string(),
            wait_start_us: a.times.started,
            acquired_us: a.times.acquired,
            end_us: a.times.ended,
            outcome: a.outcome.to_string(),
            class: a.error.map(|e| e.class),
            txn: a.times.txn,
            attempt: a.attempt,
            phase: a.error.map(|e| e.phase.to_string()),
            waited_ms: a.error.map(|e| e.waited_ms()),
            code: a.error.map(|e| e.extended_code),
            server_code: a
                .error
                .and_then(|e| e.server_code.map(|c| c.as_str().to_string())),
            seen: None,
        };
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        if serde_json::to_writer(&mut *out, &event).is_ok() {
            let _ = out.write_all(b"\n");
        }
    }

    /// Records what a poll saw (kind `poll`, outcome `read`).
    pub fn record_poll(&self, op: &str, at_us: i64, txn: u64, seen: PollSeen) {
        let event = TraceEvent {
            process: self.process.clone(),
            op: op.to_string(),
            kind: POLL_KIND.to_string(),
            wait_start_us: at_us,
            acquired_us: None,
            end_us: at_us,
            outcome: "read".to_string(),
            class: None,
            txn,
            attempt: 1,
            phase: None,
            waited_ms: None,
            code: None,
            server_code: None,
            seen: Some(seen),
        };
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        if serde_json::to_writer(&mut *out, &event).is_ok() {
            let _ = out.write_all(b"\n");
        }
    }

    pub fn flush(&self) -> std::io::Result<()> {
        self.out.lock().unwrap_or_else(|p| p.into_inner()).flush()
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// The kind of a poll line ([`Trace::record_poll`]).
pub const POLL_KIND: &str = "poll";

/// Reads a trace file's attempts; a torn last line (a killed process) is
/// skipped, and so are poll lines ([`read_trace_all`] keeps them).
pub fn read_trace(path: &Path) -> std::io::Result<Vec<TraceEvent>> {
    Ok(read_trace_all(path)?
        .into_iter()
        .filter(|e| e.kind != POLL_KIND)
        .collect())
}

/// Reads every line of a trace file, poll lines included.
pub fn read_trace_all(path: &Path) -> std::io::Result<Vec<TraceEvent>> {
    let mut events = Vec::new();
    for line in BufReader::new(File::open(path)?).lines() {
        let line = line?;
        if let Ok(e) = serde_json::from_str::<TraceEvent>(&line) {
            events.push(e);
        }
    }
    Ok(events)
}
