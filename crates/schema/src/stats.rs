//! Per-process statistics: counters per operation and outcome, failed attempts per
//! lock class, committed rows, lock wait, and a latency histogram.
//!
//! Counting identities (they hold whenever no operation is in flight):
//! - `ops = ok + gave_up`; an operation the application rolled back on purpose (a
//!   lost race) is `ok` and also counted in `aborted`;
//! - `Σ failed = retried + gave_up`, where every failed attempt is either retried
//!   or the last attempt of an operation that gave up;
//! - `rows_committed` counts rows of committed transactions (and committed
//!   autocommit statements) only.
//!
//! Latency runs from an operation's start to its final outcome, retries included.
//! Histograms are `hdrhistogram` (three significant digits, microseconds), a
//! well-kept crate whose quantiles need no sorting of samples. One mutex guards
//! the counters: it is held for a few hundred nanoseconds per operation, which is
//! nothing beside a database round trip.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::error::LockClass;

const CLASSES: usize = LockClass::ALL.len();
/// Prometheus buckets of `locklab_op_duration_seconds`, in seconds.
const BUCKETS_S: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 1 hour at 3 significant digits: constant bounds that hdrhistogram
    // always accepts.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant histogram bounds are valid")
}

#[derive(Debug, Clone)]
struct OpCounters {
    ops: u64,
    ok: u64,
    gave_up: u64,
    aborted: u64,
    retried: u64,
    failed: [u64; CLASSES],
    rows_committed: u64,
    latency_us: Histogram<u64>,
}

impl OpCounters {
    fn new() -> Self {
        OpCounters {
            ops: 0,
            ok: 0,
            gave_up: 0,
            aborted: 0,
            retried: 0,
            failed: [0; CLASSES],
            rows_committed: 0,
            latency_us: new_histogram(),
        }
    }
}

/// A process's statistics. Shared by every thread of the process.
#[derive(Debug)]
pub struct Stats {
    name: String,
    started: Mutex<(Instant, Duration)>,
    ops: Mutex<BTreeMap<&'static str, OpCounters>>,
    lock_wait_us: AtomicU64,
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Rolled back on purpose by the application (counted as ok).
    Aborted,
    GaveUp,
}

impl Stats {
    pub fn new(name: impl Into<String>) -> Stats {
        Stats {
            name: name.into(),
            started: Mutex::new((Instant::now(), crate::db::process_lock_wait())),
            ops: Mutex::new(BTreeMap::new()),
            lock_wait_us: AtomicU64::new(0),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn with_op<R>(&self, op: &'static str, f: impl FnOnce(&mut OpCounters) -> R) -> R {
        let mut ops = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        f(ops.entry(op).or_insert_with(OpCounters::new))
    }

    /// Restarts the clock that `duration_s`, `rows_per_s` and `lock_wait_share`
    /// are measured against (at the start of the load phase).
    pub fn restart_clock(&self) {
        *self.started.lock().unwrap_or_else(|p| p.into_inner()) =
            (Instant::now(), crate::db::process_lock_wait());
    }

    pub fn elapsed(&self) -> Duration {
        self.started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .elapsed()
    }

    /// Wall time since the clock started during which at least one connection
    /// of this process waited for the write lock.
    fn lock_wait(&self) -> Duration {
        let base = self.started.lock().unwrap_or_else(|p| p.into_inner()).1;
        crate::db::process_lock_wait().saturating_sub(base)
    }

    pub fn op_started(&self, op: &'static str) {
        self.with_op(op, |c| c.ops += 1);
    }

    pub fn attempt_failed(&self, op: &'static str, class: LockClass) {
        self.with_op(op, |c| c.failed[class.index()] += 1);
    }

    pub fn retried(&self, op: &'static str) {
        self.with_op(op, |c| c.retried += 1);
    }

    pub fn rows_committed(&self, op: &'static str, rows: u64) {
        if rows > 0 {
            self.with_op(op, |c| c.rows_committed += rows);
        }
    }

    pub fn lock_waited(&self, d: Duration) {
        if !d.is_zero() {
            self.lock_wait_us.fetch_add(
                u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
        }
    }

    pub fn op_finished(&self, op: &'static str, outcome: Outcome, latency: Duration) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.with_op(op, |c| {
            match outcome {
                Outcome::Ok => c.ok += 1,
                Outcome::Aborted => {
                    c.ok += 1;
                    c.aborted += 1;
                }
                Outcome::GaveUp => c.gave_up += 1,
            }
            c.latency_us.saturating_record(us);
        });
    }

    /// One `processes[]` entry of the report contract.
    pub fn snapshot(&self) -> ProcessReport {
        let elapsed = self.elapsed().as_secs_f64().max(1e-9);
        let ops = self.ops.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut all = new_histogram();
        let mut report = ProcessReport {
            name: self.name.clone(),
            failed: LockClass::ALL
                .iter()
                .map(|c| (c.as_str().to_string(), 0))
                .collect(),
            duration_s: elapsed,
            ..ProcessReport::default()
        };
        for (op, c) in &ops {
            report.ops += c.ops;
            report.ok += c.ok;
            report.retried += c.retried;
            report.gave_up += c.gave_up;
            report.rows_committed += c.rows_committed;
            let mut failed = BTreeMap::new();
            for class in LockClass::ALL {
                let n = c.failed[class.index()];
                if let Some(total) = report.failed.get_mut(class.as_str()) {
                    *total += n;
                }
                if n > 0 {
                    failed.insert(class.as_str().to_string(), n);
                }
            }
            let _ = all.add(&c.latency_us);
            report.by_op.insert(
                op.to_string(),
                OpReport {
                    ops: c.ops,
                    ok: c.ok,
                    gave_up: c.gave_up,
                    retried: c.retried,
                    aborted: c.aborted,
                    rows_committed: c.rows_committed,
                    failed,
                    latency_ms: Latency::of(&c.latency_us),
                },
            );
        }
        report.rows_per_s = report.rows_committed as f64 / elapsed;
        report.lock_wait_share = (self.lock_wait().as_secs_f64() / elapsed).min(1.0);
        report.lock_wait_total_s = self.lock_wait_us.load(Ordering::Relaxed) as f64 / 1e6;
        report.latency_ms = Latency::of(&all);
        report
    }

    /// Prometheus text exposition.
    pub fn prometheus(&self) -> String {
        let ops = self.ops.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let p = escape_label(&self.name);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP locklab_ops_total Logical operations by final outcome."
        );
        let _ = writeln!(out, "# TYPE locklab_ops_total counter");
        for (op, c) in &ops {
            for (outcome, n) in [("ok", c.ok), ("gave_up", c.gave_up), ("aborted", c.aborted)] {
                let _ = writeln!(
                    out,
                    "locklab_ops_total{{process=\"{p}\",op=\"{op}\",outcome=\"{outcome}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP locklab_failed_attempts_total Failed attempts by lock class."
        );
        let _ = writeln!(out, "# TYPE locklab_failed_attempts_total counter");
        for (op, c) in &ops {
            for class in LockClass::ALL {
                let _ = writeln!(
                    out,
                    "locklab_failed_attempts_total{{process=\"{p}\",op=\"{op}\",class=\"{class}\"}} {}",
                    c.failed[class.index()]
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP locklab_retries_total Attempts retried after a failure."
        );
        let _ = writeln!(out, "# TYPE locklab_retries_total counter");
        for (op, c) in &ops {
            let _ = writeln!(
                out,
                "locklab_retries_total{{process=\"{p}\",op=\"{op}\"}} {}",
                c.retried
            );
        }
        let _ = writeln!(
            out,
            "# HELP locklab_rows_committed_total Rows in committed transactions."
        );
        let _ = writeln!(out, "# TYPE locklab_rows_committed_total counter");
        let rows: u64 = ops.values().map(|c| c.rows_committed).sum();
        let _ = writeln!(
            out,
            "locklab_rows_committed_total{{process=\"{p}\"}} {rows}"
        );
        let _ = writeln!(
            out,
            "# HELP locklab_op_duration_seconds Operation latency, retries included."
        );
        let _ = writeln!(out, "# TYPE locklab_op_duration_seconds histogram");
        for (op, c) in &ops {
            let h = &c.latency_us;
            for le in BUCKETS_S {
                let upper = (le * 1e6) as u64;
                let n = if h.is_empty() {
                    0
                } else {
                    h.count_between(0, upper)
                };
                let _ = writeln!(
                    out,
                    "locklab_op_duration_seconds_bucket{{process=\"{p}\",op=\"{op}\",le=\"{le}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "locklab_op_duration_seconds_bucket{{process=\"{p}\",op=\"{op}\",le=\"+Inf\"}} {}",
                h.len()
            );
            let sum_s = h.mean() * h.len() as f64 / 1e6;
            let _ = writeln!(
                out,
                "locklab_op_duration_seconds_sum{{process=\"{p}\",op=\"{op}\"}} {sum_s}"
            );
            let _ = writeln!(
                out,
                "locklab_op_duration_seconds_count{{process=\"{p}\",op=\"{op}\"}} {}",
                h.len()
            );
        }
        out
    }
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Latency quantiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            p50: ms(h.value_at_quantile(0.50)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
        }
    }
}

/// Per-operation counts inside a process entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OpReport {
    pub ops: u64,
    pub ok: u64,
    pub gave_up: u64,
    #[serde(default)]
    pub retried: u64,
    #[serde(default)]
    pub aborted: u64,
    #[serde(default)]
    pub rows_committed: u64,
    /// Non-zero failed-attempt counts by class.
    #[serde(default)]
    pub failed: BTreeMap<String, u64>,
    #[serde(default)]
    pub latency_ms: Latency,
}

/// One `processes[]` entry of report.json.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessReport {
    pub name: String,
    pub ops: u64,
    pub ok: u64,
    pub retried: u64,
    pub gave_up: u64,
    /// Failed attempts by class; every class is present.
    pub failed: BTreeMap<String, u64>,
    pub rows_committed: u64,
    pub rows_per_s: f64,
    pub lock_wait_share: f64,
    pub latency_ms: Latency,
    pub by_op: BTreeMap<String, OpReport>,
    /// Seconds the counters cover.
    #[serde(default)]
    pub duration_s: f64,
    /// Sum of every connection's lock waits (threads waiting at once add up).
    #[serde(default)]
    pub lock_wait_total_s: f64,
}

impl ProcessReport {
    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }

    pub fn failed_of(&self, class: LockClass) -> u64 {
        self.failed.get(class.as_str()).copied().unwrap_or(0)
    }

    /// The class with the most failed attempts, if any failed.
    pub fn dominant_class(&self) -> Option<(LockClass, u64)> {
        LockClass::ALL
            .iter()
            .map(|c| (*c, self.failed_of(*c)))
            .filter(|(_, n)| *n > 0)
            .max_by_key(|(_, n)| *n)
    }

    /// Checks the counting identities; returns what does not hold.
    pub fn identity_violations(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.ops != self.ok + self.gave_up {
            v.push(format!(
                "{}: ops {} != ok {} + gave_up {}",
                self.name, self.ops, self.ok, self.gave_up
            ));
        }
        if self.failed_total() != self.retried + self.gave_up {
            v.push(format!(
                "{}: failed {} != retried {} + gave_up {}",
                self.name,
                self.failed_total(),
                self.retried,
                self.gave_up
            ));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_identities() {
        let s = Stats::new("webui");
        s.op_started("create_request");
        s.attempt_failed("create_request", LockClass::BusyTimeout);
        s.retried("create_request");
        s.rows_committed("create_request", 50);
        s.op_finished("create_request", Outcome::Ok, Duration::from_millis(12));
        s.op_started("create_request");
        s.attempt_failed("create_request", LockClass::BusyUpgrade);
        s.op_finished("create_request", Outcome::GaveUp, Duration::from_millis(1));
        s.op_started("claim");
        s.op_finished("claim", Outcome::Aborted, Duration::from_millis(3));
        let r = s.snapshot();
        assert_eq!((r.ops, r.ok, r.gave_up, r.retried), (3, 2, 1, 1));
        assert_eq!(r.failed.len(), LockClass::ALL.len());
        assert_eq!(r.failed_of(LockClass::BusyUpgrade), 1);
        assert_eq!(r.rows_committed, 50);
        assert!(
            r.identity_violations().is_empty(),
            "{:?}",
            r.identity_violations()
        );
        assert_eq!(r.by_op["claim"].aborted, 1);
        assert!(
            r.latency_ms.max >= 11.9 && r.latency_ms.max <= 12.1,
            "{:?}",
            r.latency_ms
        );
        let json = serde_json::to_value(&r).expect("json");
        for key in [
            "name",
            "ops",
            "ok",
            "retried",
            "gave_up",
            "failed",
            "rows_committed",
            "rows_per_s",
            "lock_wait_share",
            "latency_ms",
            "by_op",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        let text = s.prometheus();
        assert!(text.contains(
            "locklab_failed_attempts_total{process=\"webui\",op=\"create_request\",class=\"busy_upgrade\"} 1"
        ));
        assert!(text.contains(
            "locklab_ops_total{process=\"webui\",op=\"create_request\",outcome=\"gave_up\"} 1"
        ));
        assert!(text.contains(
            "locklab_op_duration_seconds_count{process=\"webui\",op=\"create_request\"} 2"
        ));
        assert!(text.contains("locklab_rows_committed_total{process=\"webui\"} 50"));
    }
}
