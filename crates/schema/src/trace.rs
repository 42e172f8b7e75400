//! The lock trace: one JSON line per write-transaction attempt, buffered.
//!
//! Each line records the process, the operation, when the attempt began waiting,
//! when the write lock was really obtained (for a deferred transaction: when its
//! first write returned, not when BEGIN did), when it ended, and how (commit,
//! rollback, failed with a class). Times are wall-clock microseconds since the
//! epoch, so traces of several processes compare. `locklab timeline` draws them.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::db::AttemptTimes;
use crate::error::LockClass;

/// One line of the trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceEvent {
    pub process: String,
    pub op: String,
    /// `txn` (an explicit transaction) or `autocommit`.
    pub kind: String,
    pub wait_start_us: i64,
    pub acquired_us: Option<i64>,
    pub end_us: i64,
    /// `commit`, `rollback` (on purpose) or `failed`.
    pub outcome: String,
    pub class: Option<LockClass>,
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

    pub fn record(
        &self,
        op: &str,
        kind: &str,
        times: &AttemptTimes,
        outcome: &str,
        class: Option<LockClass>,
    ) {
        let event = TraceEvent {
            process: self.process.clone(),
            op: op.to_string(),
            kind: kind.to_string(),
            wait_start_us: times.started,
            acquired_us: times.acquired,
            end_us: times.ended,
            outcome: outcome.to_string(),
            class,
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

/// Reads a trace file; a torn last line (a killed process) is skipped.
pub fn read_trace(path: &Path) -> std::io::Result<Vec<TraceEvent>> {
    let mut events = Vec::new();
    for line in BufReader::new(File::open(path)?).lines() {
        let line = line?;
        if let Ok(e) = serde_json::from_str::<TraceEvent>(&line) {
            events.push(e);
        }
    }
    Ok(events)
}
