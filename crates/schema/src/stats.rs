//! Per-process statistics: counters per operation and outcome, failed attempts per
//! lock class, committed rows, lock wait, and a latency histogram.
//!
//! Counting identities (they hold whenever no operation is in flight):
//! - `ops = ok + gave_up + rolled_back`; an operation that rolled back on
//!   purpose (a lost race, nothing to do) is `rolled_back`, never `ok`;
//!   `aborted` is the same count under its first name;
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

use std::collections::{BTreeMap, HashMap};
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
    rolled_back: u64,
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
            rolled_back: 0,
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
    /// The load window: its start (instant, process lock wait, rows
    /// committed) and, once the drain began, its end.
    window: Mutex<Window>,
    ops: Mutex<BTreeMap<&'static str, OpCounters>>,
    lock_wait_us: AtomicU64,
    /// Whether this process's lock waits are measured (SQLite's busy handler);
    /// a server waits inside the server, out of the lab's sight.
    lock_wait_measured: std::sync::atomic::AtomicBool,
    /// ROLLBACKs the database said did not undo everything (MySQL 1196).
    rollback_warnings: AtomicU64,
    stalls: Mutex<Stalls>,
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Rolled back on purpose (a lost race, nothing to do): not ok.
    RolledBack,
    GaveUp,
}

/// The most stalls a report lists (`stalls_total` counts them all).
pub const STALLS_LISTED: usize = 50;

#[derive(Debug, Clone, Copy)]
struct Mark {
    at: Instant,
    lock_wait: Duration,
    rows: u64,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Mark,
    end: Option<Mark>,
}

/// An operation that stalled: it retried at least three times with one class
/// inside one transaction, or ran longer than twice the busy timeout, or was
/// abandoned at shutdown while retrying. A manual-mode transaction whose
/// COMMIT keeps failing at each sync is a stall of `sync`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stall {
    pub op: String,
    /// The class of its failures (the last one), if it failed at all.
    pub class: Option<String>,
    /// Failed attempts that were tried again (for `sync`: failed commits).
    pub retries: u64,
    /// How long it lasted, or has lasted so far.
    pub seconds: f64,
    /// Wall-clock µs when it began.
    pub started_us: i64,
    /// Why it counts as a stall, in words.
    pub why: String,
    /// Still in flight when the report was made.
    #[serde(default)]
    pub ongoing: bool,
    /// Ended by the shutdown while it was retrying.
    #[serde(default)]
    pub abandoned: bool,
}

#[derive(Debug)]
struct InFlight {
    op: &'static str,
    started: Instant,
    started_us: i64,
    class: Option<LockClass>,
    retries: u64,
    /// Retries of the current streak of one class inside one transaction.
    streak_retries: u32,
    max_streak: u32,
}

#[derive(Debug)]
struct OpenTxn {
    op: &'static str,
    since: Instant,
    since_us: i64,
    class: LockClass,
    failures: u32,
}

#[derive(Debug)]
struct Stalls {
    /// Twice the busy timeout: an operation in flight longer is a stall.
    after: Duration,
    inflight: HashMap<u64, InFlight>,
    open_txns: HashMap<u64, OpenTxn>,
    done: Vec<Stall>,
    total: u64,
}

impl Stalls {
    fn of_op(&self, f: &InFlight, latency: Duration, abandoned: bool) -> Option<Stall> {
        let why = if abandoned {
            format!(
                "abandoned at shutdown while retrying ({} retries)",
                f.retries
            )
        } else if f.max_streak >= crate::ops::STALL_RETRIES {
            format!(
                "retried {} times with {} inside one transaction",
                f.max_streak,
                f.class.map(|c| c.as_str()).unwrap_or("?")
            )
        } else if latency > self.after {
            format!(
                "in flight {:.1} s, over twice the busy timeout ({:.1} s)",
                latency.as_secs_f64(),
                self.after.as_secs_f64() / 2.0
            )
        } else {
            return None;
        };
        Some(Stall {
            op: f.op.to_string(),
            class: f.class.map(|c| c.as_str().to_string()),
            retries: f.retries,
            seconds: latency.as_secs_f64(),
            started_us: f.started_us,
            why,
            ongoing: false,
            abandoned,
        })
    }

    fn of_txn(&self, t: &OpenTxn, abandoned: bool) -> Option<Stall> {
        let open = t.since.elapsed();
        let why = if abandoned {
            format!(
                "its transaction was still open at shutdown after {} failed COMMITs ({})",
                t.failures, t.class
            )
        } else if t.failures >= crate::ops::STALL_RETRIES {
            format!(
                "COMMIT failed at {} syncs with {}; the transaction stayed open",
                t.failures, t.class
            )
        } else if open > self.after {
            format!(
                "transaction open {:.1} s with a failed COMMIT, over twice the busy timeout",
                open.as_secs_f64()
            )
        } else {
            return None;
        };
        Some(Stall {
            op: t.op.to_string(),
            class: Some(t.class.as_str().to_string()),
            retries: u64::from(t.failures),
            seconds: open.as_secs_f64(),
            started_us: t.since_us,
            why,
            ongoing: false,
            abandoned,
        })
    }

    fn push(&mut self, stall: Stall) {
        self.total += 1;
        if self.done.len() < STALLS_LISTED {
            self.done.push(stall);
        }
    }
}

impl Stats {
    pub fn new(name: impl Into<String>) -> Stats {
        Stats {
            name: name.into(),
            started: Mutex::new((Instant::now(), crate::db::process_lock_wait())),
            window: Mutex::new(Window {
                start: Mark {
                    at: Instant::now(),
                    lock_wait: crate::db::process_lock_wait(),
                    rows: 0,
                },
                end: None,
            }),
            ops: Mutex::new(BTreeMap::new()),
            lock_wait_us: AtomicU64::new(0),
            lock_wait_measured: std::sync::atomic::AtomicBool::new(true),
            rollback_warnings: AtomicU64::new(0),
            stalls: Mutex::new(Stalls {
                after: Duration::from_secs(10),
                inflight: HashMap::new(),
                open_txns: HashMap::new(),
                done: Vec::new(),
                total: 0,
            }),
        }
    }

    /// The busy timeout: an operation in flight over twice as long is a stall.
    /// Lock waits are not measured on this process's backend (a server):
    /// `lock_wait_share` is reported as null.
    pub fn set_lock_wait_measured(&self, measured: bool) {
        self.lock_wait_measured.store(measured, Ordering::Relaxed);
    }

    /// ROLLBACKs that raised a warning (MySQL's 1196: MyISAM tables kept
    /// their changes).
    pub fn rollback_warned(&self, n: u64) {
        self.rollback_warnings.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set_busy_timeout(&self, timeout: Duration) {
        self.lock_stalls().after = timeout * 2;
    }

    fn lock_stalls(&self) -> std::sync::MutexGuard<'_, Stalls> {
        self.stalls.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn with_op<R>(&self, op: &'static str, f: impl FnOnce(&mut OpCounters) -> R) -> R {
        let mut ops = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        f(ops.entry(op).or_insert_with(OpCounters::new))
    }

    /// Restarts the clock that `duration_s` is measured against (when the
    /// daemon starts serving), and the load window with it.
    pub fn restart_clock(&self) {
        *self.started.lock().unwrap_or_else(|p| p.into_inner()) =
            (Instant::now(), crate::db::process_lock_wait());
        self.mark_load_start();
    }

    fn mark(&self) -> Mark {
        Mark {
            at: Instant::now(),
            lock_wait: crate::db::process_lock_wait(),
            rows: self.rows_total(),
        }
    }

    fn rows_total(&self) -> u64 {
        self.ops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|c| c.rows_committed)
            .sum()
    }

    /// The load begins (`POST /load-start`): `rows_per_s` and
    /// `lock_wait_share` are measured from here.
    pub fn mark_load_start(&self) {
        let mark = self.mark();
        *self.window.lock().unwrap_or_else(|p| p.into_inner()) = Window {
            start: mark,
            end: None,
        };
    }

    /// The load ended (the drain began): the window closes here, the first
    /// time only.
    pub fn mark_load_end(&self) {
        let mark = self.mark();
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if w.end.is_none() {
            w.end = Some(mark);
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .elapsed()
    }

    pub fn op_started(&self, op: &'static str, id: u64) {
        self.with_op(op, |c| c.ops += 1);
        self.lock_stalls().inflight.insert(
            id,
            InFlight {
                op,
                started: Instant::now(),
                started_us: crate::types::now_micros(),
                class: None,
                retries: 0,
                streak_retries: 0,
                max_streak: 0,
            },
        );
    }

    /// A failed attempt of operation `id`: `repeats` is its streak of failures
    /// with one class inside one open transaction (0 outside one).
    pub fn op_failed_attempt(&self, id: u64, class: LockClass, repeats: u32, retrying: bool) {
        let mut s = self.lock_stalls();
        if let Some(f) = s.inflight.get_mut(&id) {
            f.class = Some(class);
            if retrying {
                f.retries += 1;
            }
            f.streak_retries = if retrying {
                repeats
            } else {
                repeats.saturating_sub(1)
            };
            f.max_streak = f.max_streak.max(f.streak_retries);
        }
    }

    /// A manual-mode transaction's COMMIT failed (it stays open).
    pub fn txn_commit_failed(&self, txn: u64, op: &'static str, class: LockClass) {
        let mut s = self.lock_stalls();
        let t = s.open_txns.entry(txn).or_insert_with(|| OpenTxn {
            op,
            since: Instant::now(),
            since_us: crate::types::now_micros(),
            class,
            failures: 0,
        });
        t.failures += 1;
        t.class = class;
    }

    /// A manual-mode transaction ended: committed, or (`abandoned`) rolled back
    /// at shutdown.
    pub fn txn_settled(&self, txn: u64, abandoned: bool) {
        let mut s = self.lock_stalls();
        if let Some(t) = s.open_txns.remove(&txn) {
            if let Some(stall) = s.of_txn(&t, abandoned) {
                s.push(stall);
            }
        }
    }

    /// Every open manual-mode transaction with failed commits is settled as
    /// abandoned (the process is stopping).
    pub fn abandon_open_txns(&self) {
        let txns: Vec<u64> = self.lock_stalls().open_txns.keys().copied().collect();
        for t in txns {
            self.txn_settled(t, true);
        }
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

    pub fn op_finished(
        &self,
        op: &'static str,
        id: u64,
        outcome: Outcome,
        latency: Duration,
        abandoned: bool,
    ) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.with_op(op, |c| {
            match outcome {
                Outcome::Ok => c.ok += 1,
                Outcome::RolledBack => c.rolled_back += 1,
                Outcome::GaveUp => c.gave_up += 1,
            }
            c.latency_us.saturating_record(us);
        });
        let mut s = self.lock_stalls();
        if let Some(f) = s.inflight.remove(&id) {
            if let Some(stall) = s.of_op(&f, latency, abandoned) {
                s.push(stall);
            }
        }
    }

    /// Stalls so far: finished ones, then those still in flight.
    pub fn stalls(&self) -> (Vec<Stall>, u64) {
        let s = self.lock_stalls();
        let mut out = s.done.clone();
        let mut total = s.total;
        let mut ongoing: Vec<Stall> = s
            .inflight
            .values()
            .filter_map(|f| s.of_op(f, f.started.elapsed(), false))
            .chain(s.open_txns.values().filter_map(|t| s.of_txn(t, false)))
            .map(|mut st| {
                st.ongoing = true;
                st
            })
            .collect();
        ongoing.sort_by_key(|st| st.started_us);
        total += ongoing.len() as u64;
        for st in ongoing {
            if out.len() < STALLS_LISTED {
                out.push(st);
            }
        }
        (out, total)
    }

    /// One `processes[]` entry of the report contract.
    pub fn snapshot(&self) -> ProcessReport {
        let elapsed = self.elapsed().as_secs_f64().max(1e-9);
        let ops = self.ops.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut all = new_histogram();
        let usage = own_usage();
        let mut report = ProcessReport {
            name: self.name.clone(),
            failed: LockClass::ALL
                .iter()
                .map(|c| (c.as_str().to_string(), 0))
                .collect(),
            duration_s: elapsed,
            cpu_s: usage.map(|u| u.0),
            peak_rss_mib: usage.map(|u| u.1),
            ..ProcessReport::default()
        };
        for (op, c) in &ops {
            report.ops += c.ops;
            report.ok += c.ok;
            report.retried += c.retried;
            report.gave_up += c.gave_up;
            report.rolled_back += c.rolled_back;
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
                    rolled_back: c.rolled_back,
                    aborted: c.rolled_back,
                    rows_committed: c.rows_committed,
                    failed,
                    latency_ms: Latency::of(&c.latency_us),
                    in_flight_at_death: 0,
                },
            );
        }
        // Rates over the load window: from the load's start to the drain (or
        // to now, while the load runs). The drain is reported apart.
        let w = *self.window.lock().unwrap_or_else(|p| p.into_inner());
        let end = w.end.unwrap_or(Mark {
            at: Instant::now(),
            lock_wait: crate::db::process_lock_wait(),
            rows: report.rows_committed,
        });
        let load_s = end
            .at
            .saturating_duration_since(w.start.at)
            .as_secs_f64()
            .max(1e-9);
        report.load_s = load_s;
        report.drain_s = w.end.map(|e| e.at.elapsed().as_secs_f64()).unwrap_or(0.0);
        report.rows_in_load = end.rows.saturating_sub(w.start.rows);
        report.rows_per_s = report.rows_in_load as f64 / load_s;
        report.lock_wait_share = self.lock_wait_measured.load(Ordering::Relaxed).then(|| {
            (end.lock_wait
                .saturating_sub(w.start.lock_wait)
                .as_secs_f64()
                / load_s)
                .min(1.0)
        });
        report.lock_wait_total_s = self.lock_wait_us.load(Ordering::Relaxed) as f64 / 1e6;
        report.latency_ms = Latency::of(&all);
        report.aborted = report.rolled_back;
        report.rollbacks_not_undone = self.rollback_warnings.load(Ordering::Relaxed);
        let (stalls, total) = self.stalls();
        report.stalls = stalls;
        report.stalls_total = total;
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
            for (outcome, n) in [
                ("ok", c.ok),
                ("gave_up", c.gave_up),
                ("rolled_back", c.rolled_back),
            ] {
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
    /// Operations rolled back on purpose (schema_version 2).
    #[serde(default)]
    pub rolled_back: u64,
    /// The same count as `rolled_back`, under its first name.
    #[serde(default)]
    pub aborted: u64,
    #[serde(default)]
    pub rows_committed: u64,
    /// Non-zero failed-attempt counts by class.
    #[serde(default)]
    pub failed: BTreeMap<String, u64>,
    #[serde(default)]
    pub latency_ms: Latency,
    /// Operations a killed instance had started and not ended (added field).
    #[serde(default)]
    pub in_flight_at_death: u64,
}

/// CPU time of the calling thread.
pub fn thread_cpu() -> Duration {
    // SAFETY: all-zero bytes are a valid timespec; clock_gettime writes only
    // into it.
    let (rc, ts) = unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        let rc = libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
        (rc, ts)
    };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// This process's CPU seconds (user + system) and peak RSS in MiB.
pub fn own_usage() -> Option<(f64, f64)> {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut u) != 0 {
            return None;
        }
        u
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    // The peak from /proc/self/status's VmHWM: Linux carries ru_maxrss over
    // an execve, so a daemon started by a big parent (locklab bench, after
    // the ceiling's 100k rows) reported the parent's peak as its own.
    let hwm_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        // ru_maxrss is in KiB on Linux.
        .unwrap_or(u.ru_maxrss as f64);
    Some((secs(u.ru_utime) + secs(u.ru_stime), hwm_kib / 1024.0))
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
    /// Rows committed per second of the load window (`rows_in_load / load_s`).
    pub rows_per_s: f64,
    /// Share of the load window in which the process waited in the busy
    /// handler. Null on a server backend, whose lock waits happen inside the
    /// server where the lab cannot time them.
    pub lock_wait_share: Option<f64>,
    pub latency_ms: Latency,
    pub by_op: BTreeMap<String, OpReport>,
    /// Seconds the counters cover.
    #[serde(default)]
    pub duration_s: f64,
    /// Sum of every connection's lock waits (threads waiting at once add up).
    #[serde(default)]
    pub lock_wait_total_s: f64,
    /// Operations rolled back on purpose (a lost race, nothing to do); 0 in
    /// schema_version 1 reports.
    #[serde(default)]
    pub rolled_back: u64,
    /// The same count as `rolled_back`, under its first name.
    #[serde(default)]
    pub aborted: u64,
    /// Stalls and livelocks (always a list, `[]` when none; at most 50).
    #[serde(default)]
    pub stalls: Vec<Stall>,
    /// Every stall, listed or not.
    #[serde(default)]
    pub stalls_total: u64,
    /// The load window `rows_per_s` and `lock_wait_share` are measured over:
    /// from the load's start to the drain (added field).
    #[serde(default)]
    pub load_s: f64,
    /// Seconds since the drain began (0 while the load runs; added field).
    #[serde(default)]
    pub drain_s: f64,
    /// Rows committed inside the load window (`rows_per_s` = this / `load_s`;
    /// `rows_committed` counts the whole life; added field).
    #[serde(default)]
    pub rows_in_load: u64,
    /// ROLLBACKs after which the database warned that it could not undo
    /// everything: MySQL's warning 1196 on non-transactional (MyISAM) tables
    /// (added field).
    #[serde(default)]
    pub rollbacks_not_undone: u64,
    /// Each death of this process during a run, in order: when, how, and
    /// whether it was restarted (added field; always a list, `[]` when none).
    /// `locklab run` fills it; a daemon's own stats leave it empty.
    #[serde(default)]
    pub exits: Vec<ProcessExit>,
    /// Operations its killed instances had started and not ended when they
    /// died: neither ok, given up nor rolled back (added field; `ops` = `ok`
    /// + `gave_up` + `rolled_back` + this).
    #[serde(default)]
    pub in_flight_at_death: u64,
    /// CPU time, user plus system, the process used since it started
    /// (getrusage; added field, null in older reports; instances add up).
    #[serde(default)]
    pub cpu_s: Option<f64>,
    /// Its peak resident set size in MiB (VmHWM; added field; the largest
    /// of its instances).
    #[serde(default)]
    pub peak_rss_mib: Option<f64>,
}

/// One death of a daemon during `locklab run`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessExit {
    /// Wall-clock µs when the supervisor saw it.
    pub at_us: i64,
    /// Seconds since the run's load began (negative: before it).
    pub at_s: f64,
    /// The exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that killed it, if one did (9: SIGKILL).
    pub signal: Option<i32>,
    /// Whether the supervisor started it again.
    pub restarted: bool,
}

impl OpReport {
    fn merge(&mut self, o: &OpReport) {
        self.ops += o.ops;
        self.ok += o.ok;
        self.gave_up += o.gave_up;
        self.retried += o.retried;
        self.rolled_back += o.rolled_back;
        self.aborted += o.aborted;

        self.rows_committed += o.rows_committed;
        for (k, v) in &o.failed {
            *self.failed.entry(k.clone()).or_default() += v;
        }
        self.latency_ms = self.latency_ms.worst(&o.latency_ms);
        self.in_flight_at_death += o.in_flight_at_death;
    }
}

impl Latency {
    /// Each percentile the larger of two: what a merge of two processes'
    /// histograms can honestly say without the histograms.
    pub fn worst(&self, o: &Latency) -> Latency {
        Latency {
            p50: self.p50.max(o.p50),
            p95: self.p95.max(o.p95),
            p99: self.p99.max(o.p99),
            max: self.max.max(o.max),
        }
    }
}

impl ProcessReport {
    /// Adds another instance of the same process (a restarted daemon): the
    /// counts add up; latency percentiles take the larger of the two (an
    /// upper bound: the histograms are not kept). Instances run one after
    /// the other (each window starts when the supervisor restarts it), so
    /// the load windows add up, and `rows_per_s` and the lock wait share are
    /// recomputed over their sum.
    pub fn merge(&mut self, o: &ProcessReport) {
        self.ops += o.ops;
        self.ok += o.ok;
        self.retried += o.retried;
        self.gave_up += o.gave_up;
        for (k, v) in &o.failed {
            *self.failed.entry(k.clone()).or_default() += v;
        }
        self.rows_committed += o.rows_committed;
        self.rows_in_load += o.rows_in_load;
        // The lock wait, in seconds, over both windows.
        let both = self.load_s + o.load_s;
        self.lock_wait_share = match (self.lock_wait_share, o.lock_wait_share) {
            (Some(a), Some(b)) if both > 0.0 => {
                Some(((a * self.load_s + b * o.load_s) / both).min(1.0))
            }
            (a, b) => a.or(b),
        };
        self.load_s = both;
        self.rows_per_s = if self.load_s > 0.0 {
            self.rows_in_load as f64 / self.load_s
        } else {
            0.0
        };
        self.latency_ms = self.latency_ms.worst(&o.latency_ms);
        for (k, v) in &o.by_op {
            self.by_op.entry(k.clone()).or_default().merge(v);
        }
        self.duration_s += o.duration_s;
        self.lock_wait_total_s += o.lock_wait_total_s;
        self.rolled_back += o.rolled_back;
        self.aborted += o.aborted;
        self.cpu_s = match (self.cpu_s, o.cpu_s) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.peak_rss_mib = match (self.peak_rss_mib, o.peak_rss_mib) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.stalls.extend(o.stalls.iter().cloned());
        self.stalls.truncate(STALLS_LISTED);
        self.stalls_total += o.stalls_total;
        self.drain_s = self.drain_s.max(o.drain_s);
        self.rollbacks_not_undone += o.rollbacks_not_undone;
        self.in_flight_at_death += o.in_flight_at_death;
    }

    /// For the last stats of an instance that was killed: the operations it
    /// had started and not ended are counted as in flight at its death.
    pub fn mark_killed(&mut self) {
        self.in_flight_at_death = self
            .ops
            .saturating_sub(self.ok + self.gave_up + self.rolled_back);
        for o in self.by_op.values_mut() {
            o.in_flight_at_death = o.ops.saturating_sub(o.ok + o.gave_up + o.rolled_back);
        }
    }

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
        if self.ops != self.ok + self.gave_up + self.rolled_back + self.in_flight_at_death {
            v.push(format!(
                "{}: ops {} != ok {} + gave_up {} + rolled_back {} + in flight at a death {}",
                self.name,
                self.ops,
                self.ok,
                self.gave_up,
                self.rolled_back,
                self.in_flight_at_death
            ));
        }
        for (name, o) in &self.by_op {
            if o.ops != o.ok + o.gave_up + o.rolled_back + o.in_flight_at_death {
                v.push(format!(
                    "{}: {name}: ops {} != ok {} + gave_up {} + rolled_back {}",
                    self.name, o.ops, o.ok, o.gave_up, o.rolled_back
                ));
            }
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

    /// Two instances of a restarted daemon, one after the other: counts and
    /// windows add up, and the rates are over the whole of both windows.
    #[test]
    fn merged_instances_add_their_windows() {
        let first = ProcessReport {
            ops: 10,
            ok: 10,
            rows_in_load: 100,
            load_s: 10.0,
            lock_wait_share: Some(0.5),
            ..ProcessReport::default()
        };
        let second = ProcessReport {
            ops: 30,
            ok: 29,
            gave_up: 1,
            rows_in_load: 200,
            load_s: 20.0,
            lock_wait_share: Some(0.2),
            ..ProcessReport::default()
        };
        let mut m = first.clone();
        m.merge(&second);
        assert_eq!((m.ops, m.ok, m.gave_up), (40, 39, 1));
        assert_eq!(m.load_s, 30.0);
        assert!((m.rows_per_s - 10.0).abs() < 1e-9, "{}", m.rows_per_s);
        let share = m.lock_wait_share.unwrap_or(0.0);
        assert!(
            (share - (0.5 * 10.0 + 0.2 * 20.0) / 30.0).abs() < 1e-9,
            "{share}"
        );
    }

    #[test]
    fn counts_and_identities() {
        let s = Stats::new("webui");
        s.op_started("create_request", 1);
        s.attempt_failed("create_request", LockClass::BusyTimeout);
        s.retried("create_request");
        s.rows_committed("create_request", 50);
        s.op_finished(
            "create_request",
            1,
            Outcome::Ok,
            Duration::from_millis(12),
            false,
        );
        s.op_started("create_request", 2);
        s.attempt_failed("create_request", LockClass::BusyUpgrade);
        s.op_finished(
            "create_request",
            2,
            Outcome::GaveUp,
            Duration::from_millis(1),
            false,
        );
        s.op_started("claim", 3);
        s.op_finished(
            "claim",
            3,
            Outcome::RolledBack,
            Duration::from_millis(3),
            false,
        );
        // a stall: three retries with one class inside one transaction
        s.op_started("select_environment", 4);
        for n in 1..=3 {
            s.attempt_failed("select_environment", LockClass::BusyUpgrade);
            s.retried("select_environment");
            s.op_failed_attempt(4, LockClass::BusyUpgrade, n, true);
        }
        s.op_finished(
            "select_environment",
            4,
            Outcome::Ok,
            Duration::from_millis(1500),
            false,
        );
        let r = s.snapshot();
        assert_eq!(
            (r.ops, r.ok, r.gave_up, r.rolled_back, r.retried),
            (4, 2, 1, 1, 4)
        );
        assert_eq!(r.aborted, r.rolled_back);
        assert_eq!(r.stalls.len(), 1, "{:?}", r.stalls);
        assert_eq!(r.stalls[0].op, "select_environment");
        assert_eq!(r.stalls[0].class.as_deref(), Some("busy_upgrade"));
        assert_eq!(r.failed.len(), LockClass::ALL.len());
        assert_eq!(r.failed_of(LockClass::BusyUpgrade), 4);
        assert_eq!(r.rows_committed, 50);
        assert!(
            r.identity_violations().is_empty(),
            "{:?}",
            r.identity_violations()
        );
        assert_eq!(r.by_op["claim"].rolled_back, 1);
        assert_eq!(r.by_op["claim"].ok, 0);
        assert!(
            r.latency_ms.max >= 1499.0 && r.latency_ms.max <= 1501.0,
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
