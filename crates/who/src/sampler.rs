//! The sampling thread: a [`Watch`] sample every interval, holds tracked per
//! PID, live events, and the final [`WhoReport`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use schema::types::now_micros;
use serde::{Deserialize, Serialize};

use super::decode::WriteMode;
use super::procinfo::{proc_info, short_command, ProcInfo};
use super::watch::{ProbeMode, Sample, Watch};

/// The shortest interval accepted: below it the sampler only burns CPU.
pub const MIN_INTERVAL: Duration = Duration::from_micros(100);

/// One hold of the write lock by one PID: from the first sample that saw it
/// to the first sample that did not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hold {
    pub pid: i32,
    /// The mode it was first seen in.
    pub mode: WriteMode,
    /// The strongest mode seen during the hold (a rollback-journal writer
    /// goes from RESERVED to EXCLUSIVE to commit).
    pub peak: WriteMode,
    /// Wall-clock microseconds since the epoch (as the daemons' traces).
    pub start_us: i64,
    pub end_us: i64,
    /// Samples that saw it. A hold seen once is counted but not timed.
    pub samples: u32,
}

impl Hold {
    pub fn timed(&self) -> bool {
        self.samples >= 2
    }

    pub fn held_us(&self) -> i64 {
        self.end_us - self.start_us
    }

    /// `RESERVED`, or `RESERVED→EXCLUSIVE` when it rose.
    pub fn modes(&self) -> String {
        if self.peak == self.mode {
            self.mode.to_string()
        } else {
            format!("{}→{}", self.mode, self.peak)
        }
    }
}

/// One PID's holds of the write lock over the whole sampling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HolderStats {
    pub pid: i32,
    pub name: String,
    pub cmdline: String,
    pub container: Option<String>,
    /// The lab process this PID is (set by `locklab run`); null otherwise.
    #[serde(default)]
    pub process: Option<String>,
    /// Holds seen.
    pub count: u64,
    /// Holds seen in one sample only: counted, not timed.
    pub untimed: u64,
    /// Estimated time held: each sample's gap to the next, added to the PID
    /// seen holding in it.
    pub total_s: f64,
    /// The longest hold seen in two samples or more.
    pub longest_s: f64,
    /// total_s over the sampled time.
    pub share: f64,
    /// Holds per mode, `RESERVED→EXCLUSIVE` when a hold rose.
    pub modes: BTreeMap<String, u64>,
}

/// What `locklab who` measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WhoReport {
    pub file: String,
    /// Whether a `-shm` existed (WAL mode) at some point.
    pub wal_index_seen: bool,
    pub started_us: i64,
    pub ended_us: i64,
    pub sampled_s: f64,
    /// The interval asked for.
    pub interval_us: u64,
    pub samples: u64,
    /// Samples per second really taken.
    pub samples_per_s: f64,
    /// The longest gap between two samples.
    pub max_gap_us: u64,
    /// CPU time of the sampling thread over its wall time.
    pub cpu_share: f64,
    /// `F_GETLK`, or `/proc/locks + F_GETLK`.
    pub source: String,
    /// What the figures can and cannot tell, in one sentence.
    pub resolution: String,
    /// Per PID, longest total first.
    pub holders: Vec<HolderStats>,
    /// Every hold, in order of start.
    pub holds: Vec<Hold>,
    pub warnings: Vec<String>,
}

impl WhoReport {
    /// Names the PIDs that are known processes (the lab's daemons).
    pub fn label(&mut self, names: &HashMap<i32, String>) {
        for h in &mut self.holders {
            h.process = names.get(&h.pid).cloned();
        }
    }

    pub fn holder(&self, pid: i32) -> Option<&HolderStats> {
        self.holders.iter().find(|h| h.pid == pid)
    }
}

/// A PID in a live event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Party {
    pub pid: i32,
    pub name: String,
    pub mode: Option<WriteMode>,
    /// Its name and arguments, the first time this PID shows in an event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

/// Live events, in the order they happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LiveEvent {
    /// Sampling began.
    Started {
        at_us: i64,
        file: String,
        wal_index: bool,
        source: String,
    },
    /// The write lock changed hands (or was taken, or freed).
    Change {
        at_us: i64,
        /// Who holds it now (usually one PID; none when it is free).
        holders: Vec<Party>,
        /// Holds that ended at this sample.
        ended: Vec<Hold>,
        ended_names: Vec<String>,
        /// PIDs blocked in the kernel on a lock byte (SQLite itself polls and
        /// sleeps in its busy handler instead, which the OS cannot see).
        waiting: Vec<Party>,
        readers: usize,
    },
    /// Something the user should know (an unseen holder, a device mismatch).
    Notice { at_us: i64, message: String },
}

/// Tracks open holds from sample to sample.
#[derive(Debug, Default)]
struct Tracker {
    open: BTreeMap<i32, Hold>,
    holds: Vec<Hold>,
}

impl Tracker {
    /// Feeds one sample's writers; returns the PIDs whose hold began and the
    /// holds that ended.
    fn observe(&mut self, t_us: i64, writers: &BTreeMap<i32, WriteMode>) -> (Vec<i32>, Vec<Hold>) {
        let mut ended = Vec::new();
        let gone: Vec<i32> = self
            .open
            .keys()
            .filter(|pid| !writers.contains_key(pid))
            .copied()
            .collect();
        for pid in gone {
            if let Some(mut h) = self.open.remove(&pid) {
                h.end_us = t_us;
                ended.push(h);
            }
        }
        let mut started = Vec::new();
        for (pid, mode) in writers {
            match self.open.get_mut(pid) {
                Some(h) => {
                    h.samples += 1;
                    h.peak = h.peak.max(*mode);
                }
                None => {
                    started.push(*pid);
                    self.open.insert(
                        *pid,
                        Hold {
                            pid: *pid,
                            mode: *mode,
                            peak: *mode,
                            start_us: t_us,
                            end_us: t_us,
                            samples: 1,
                        },
                    );
                }
            }
        }
        self.holds.extend(ended.iter().cloned());
        (started, ended)
    }

    fn close_all(&mut self, t_us: i64) -> Vec<Hold> {
        let ended: Vec<Hold> = std::mem::take(&mut self.open)
            .into_values()
            .map(|mut h| {
                h.end_us = t_us;
                h
            })
            .collect();
        self.holds.extend(ended.iter().cloned());
        ended
    }
}

/// What a sampler is told at start.
#[derive(Debug, Clone)]
pub struct SamplerOptions {
    pub interval: Duration,
    pub probe: ProbeMode,
    /// Where live events go, if anywhere.
    pub live: Option<Sender<LiveEvent>>,
}

/// A running sampler: a thread that samples until [`Sampler::stop`].
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<WhoReport>,
}

impl Sampler {
    /// Checks the file and starts sampling on a thread of its own. Errors
    /// (missing file, not SQLite) come back here, before any thread starts.
    pub fn start(path: &Path, opts: SamplerOptions) -> anyhow::Result<Sampler> {
        if opts.interval < MIN_INTERVAL {
            bail!(
                "the interval must be at least {}µs",
                MIN_INTERVAL.as_micros()
            );
        }
        let watch = Watch::open(path, opts.probe)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("who-sampler".to_string())
            .spawn(move || sample_loop(watch, opts, &flag))
            .context("starting the sampler thread")?;
        Ok(Sampler { stop, thread })
    }

    /// Stops sampling, closes the holds still open at this moment, and
    /// returns the report.
    pub fn stop(self) -> anyhow::Result<WhoReport> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the lock sampler thread panicked"))
    }
}

/// One sample of `path`, for a quick look and for tests.
pub fn snapshot(path: &Path, probe: ProbeMode) -> anyhow::Result<(Sample, Vec<String>)> {
    let mut w = Watch::open(path, probe)?;
    let s = w.sample();
    Ok((s, w.warnings))
}

fn send(live: &Option<Sender<LiveEvent>>, e: LiveEvent) {
    if let Some(tx) = live {
        let _ = tx.send(e);
    }
}

/// What the sampler knows of the PIDs it met, and which it has introduced in
/// a live event already.
#[derive(Debug, Default)]
struct Known {
    infos: HashMap<i32, ProcInfo>,
    introduced: HashSet<i32>,
}

impl Known {
    fn info(&mut self, pid: i32) -> &ProcInfo {
        self.infos.entry(pid).or_insert_with(|| proc_info(pid))
    }

    fn party(&mut self, pid: i32, mode: Option<WriteMode>) -> Party {
        let first = self.introduced.insert(pid);
        let info = self.info(pid);
        Party {
            pid,
            name: info.name.clone(),
            mode,
            command: (first && pid > 0).then(|| short_command(&info.name, &info.cmdline, 80)),
        }
    }
}

fn sample_loop(mut watch: Watch, opts: SamplerOptions, stop: &AtomicBool) -> WhoReport {
    let cpu_start = schema::stats::thread_cpu();
    let anchor = Instant::now();
    let anchor_us = now_micros();
    let wall =
        |t: Instant| anchor_us + i64::try_from(t.duration_since(anchor).as_micros()).unwrap_or(0);
    let source = |w: &Watch| w.mode.as_str();
    send(
        &opts.live,
        LiveEvent::Started {
            at_us: anchor_us,
            file: watch.db_path.display().to_string(),
            wal_index: watch.shm_seen,
            source: source(&watch).to_string(),
        },
    );
    let mut tracker = Tracker::default();
    let mut known = Known::default();
    let mut samples = 0u64;
    let mut max_gap = Duration::ZERO;
    let mut last: Option<Instant> = None;
    let mut told = 0usize;
    let mut next = anchor;
    let end = loop {
        let t = Instant::now();
        if let Some(prev) = last {
            max_gap = max_gap.max(t - prev);
        }
        if stop.load(Ordering::SeqCst) {
            let t_us = wall(t);
            let ended = tracker.close_all(t_us);
            if !ended.is_empty() {
                let ended_names = ended
                    .iter()
                    .map(|h| known.info(h.pid).name.clone())
                    .collect();
                send(
                    &opts.live,
                    LiveEvent::Change {
                        at_us: t_us,
                        holders: Vec::new(),
                        ended,
                        ended_names,
                        waiting: Vec::new(),
                        readers: 0,
                    },
                );
            }
            break t;
        }
        last = Some(t);
        let t_us = wall(t);
        let sample = watch.sample();
        samples += 1;
        let writers = sample.writers();
        let (started, ended) = tracker.observe(t_us, &writers);
        for pid in &started {
            // read /proc/PID now, while the holder surely exists
            known.info(*pid);
        }
        while told < watch.warnings.len() {
            send(
                &opts.live,
                LiveEvent::Notice {
                    at_us: t_us,
                    message: watch.warnings[told].clone(),
                },
            );
            told += 1;
        }
        if opts.live.is_some() && (!started.is_empty() || !ended.is_empty()) {
            event_for(&opts, &mut known, t_us, &sample, &writers, ended);
        }
        next += opts.interval;
        let now = Instant::now();
        if next > now {
            // in slices, so that stop() never waits for a long interval
            while !stop.load(Ordering::Relaxed) {
                let left = next.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                std::thread::sleep(left.min(Duration::from_millis(50)));
            }
        } else {
            // behind schedule: do not burst to catch up
            next = now;
        }
    };
    let cpu = schema::stats::thread_cpu().saturating_sub(cpu_start);
    let report = build_report(
        &watch,
        &opts,
        tracker.holds,
        &mut known.infos,
        samples,
        (anchor_us, wall(end)),
        max_gap,
        cpu,
    );
    WhoReport {
        source: source(&watch).to_string(),
        ..report
    }
}

fn event_for(
    opts: &SamplerOptions,
    known: &mut Known,
    t_us: i64,
    sample: &Sample,
    writers: &BTreeMap<i32, WriteMode>,
    ended: Vec<Hold>,
) {
    let holders = writers
        .iter()
        .map(|(pid, m)| known.party(*pid, Some(*m)))
        .collect();
    let waiting = sample
        .waiting()
        .into_iter()
        .map(|pid| known.party(pid, None))
        .collect();
    let ended_names = ended
        .iter()
        .map(|h| known.info(h.pid).name.clone())
        .collect();
    send(
        &opts.live,
        LiveEvent::Change {
            at_us: t_us,
            holders,
            ended,
            ended_names,
            waiting,
            readers: sample.readers().len(),
        },
    );
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    watch: &Watch,
    opts: &SamplerOptions,
    mut holds: Vec<Hold>,
    infos: &mut HashMap<i32, ProcInfo>,
    samples: u64,
    window: (i64, i64),
    max_gap: Duration,
    cpu: Duration,
) -> WhoReport {
    let elapsed = Duration::from_micros(u64::try_from(window.1 - window.0).unwrap_or(0));
    holds.sort_by_key(|h| (h.start_us, h.pid));
    let sampled_s = elapsed.as_secs_f64();
    let mut by_pid: BTreeMap<i32, Vec<&Hold>> = BTreeMap::new();
    for h in &holds {
        by_pid.entry(h.pid).or_default().push(h);
    }
    let mut holders: Vec<HolderStats> = by_pid
        .into_iter()
        .map(|(pid, hs)| {
            let info = infos.entry(pid).or_insert_with(|| proc_info(pid)).clone();
            let total_us: i64 = hs.iter().map(|h| h.held_us()).sum();
            let longest_us = hs
                .iter()
                .filter(|h| h.timed())
                .map(|h| h.held_us())
                .max()
                .unwrap_or(0);
            let mut modes = BTreeMap::new();
            for h in &hs {
                *modes.entry(h.modes()).or_insert(0u64) += 1;
            }
            HolderStats {
                pid,
                name: info.name,
                cmdline: info.cmdline,
                container: info.container,
                process: None,
                count: hs.len() as u64,
                untimed: hs.iter().filter(|h| !h.timed()).count() as u64,
                total_s: total_us as f64 / 1e6,
                longest_s: longest_us as f64 / 1e6,
                share: if sampled_s > 0.0 {
                    total_us as f64 / 1e6 / sampled_s
                } else {
                    0.0
                },
                modes,
            }
        })
        .collect();
    holders.sort_by(|a, b| b.total_s.total_cmp(&a.total_s).then(a.pid.cmp(&b.pid)));
    let rate = if sampled_s > 0.0 {
        samples as f64 / sampled_s
    } else {
        0.0
    };
    WhoReport {
        file: watch.db_path.display().to_string(),
        wal_index_seen: watch.shm_seen,
        started_us: window.0,
        ended_us: window.1,
        sampled_s,
        interval_us: u64::try_from(opts.interval.as_micros()).unwrap_or(u64::MAX),
        samples,
        samples_per_s: rate,
        max_gap_us: u64::try_from(max_gap.as_micros()).unwrap_or(u64::MAX),
        cpu_share: if sampled_s > 0.0 {
            cpu.as_secs_f64() / sampled_s
        } else {
            0.0
        },
        source: String::new(),
        resolution: resolution(opts.interval, rate, max_gap),
        holders,
        holds,
        warnings: watch.notes.iter().chain(&watch.warnings).cloned().collect(),
    }
}

/// The sentence that says what the figures can tell.
pub fn resolution(interval: Duration, rate: f64, max_gap: Duration) -> String {
    format!(
        "sampled every {} as asked, {rate:.0} samples/s achieved, longest gap {:.1} ms; a hold seen \
         in one sample only is counted but not timed (it lasted less than about two gaps); holds of one \
         PID less than a gap apart are seen as one; totals add each sample's gap to the PID seen \
         holding in it, so they are estimates at that resolution",
        schema::settings::fmt_duration(interval),
        max_gap.as_secs_f64() * 1e3
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_times_holds_from_first_seen_to_first_absent() {
        let mut t = Tracker::default();
        let w = |v: &[(i32, WriteMode)]| v.iter().copied().collect::<BTreeMap<_, _>>();
        let (s, e) = t.observe(1000, &w(&[(7, WriteMode::Reserved)]));
        assert_eq!((s, e.len()), (vec![7], 0));
        let (s, e) = t.observe(2000, &w(&[(7, WriteMode::Exclusive)]));
        assert!(s.is_empty() && e.is_empty());
        // 7 hands over to 8 between two samples
        let (s, e) = t.observe(3000, &w(&[(8, WriteMode::WalWrite)]));
        assert_eq!(s, vec![8]);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].pid, 7);
        assert_eq!(e[0].mode, WriteMode::Reserved);
        assert_eq!(e[0].peak, WriteMode::Exclusive);
        assert_eq!(e[0].modes(), "RESERVED→EXCLUSIVE");
        assert_eq!(e[0].held_us(), 2000);
        assert!(e[0].timed());
        let (_, e) = t.observe(4000, &w(&[]));
        assert_eq!(e[0].pid, 8);
        assert!(!e[0].timed());
        assert!(t.close_all(5000).is_empty());
        assert_eq!(t.holds.len(), 2);
    }
}
