//! The sampler as an independent witness in `locklab run`: each daemon's
//! write-lock time as its own trace tells it beside the time the OS saw it
//! hold the lock, any foreign holder named, and the OS-observed lanes of the
//! timeline.
//!
//! report.json gains `holders` (one entry per PID that held the write lock,
//! plus one per daemon even when the OS never saw it hold) and `witness` (how
//! the sampling went). Both are added fields: older reports read with them
//! empty.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::Context;
use schema::trace::read_trace;
use serde::{Deserialize, Serialize};

use super::cli::fmt_secs;
use super::procinfo::short_command;
use super::sampler::WhoReport;

/// Above this relative difference between a daemon's own hold time and the
/// OS-observed one, the report flags a disagreement.
pub const DISAGREEMENT_LIMIT: f64 = 0.10;

/// The process name `locklab run` gives itself among the holders.
pub const SELF_NAME: &str = "locklab";

/// The witness's file in a run's out folder (the whole [`WhoReport`], holds
/// included), read again by `locklab timeline DIR`.
pub const WHO_FILE: &str = "who.json";

/// One PID that held SQLite's write lock during a run, as the OS saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: i32,
    pub name: String,
    pub cmdline: String,
    #[serde(default)]
    pub container: Option<String>,
    /// The lab process this PID is (`webui`, `runbuilds`, `buildinfohelper`,
    /// `locklab`), or null for a foreign process.
    pub process: Option<String>,
    /// OS-observed write-lock time (a sampling estimate).
    pub total_s: f64,
    /// The longest hold seen in two samples or more.
    pub longest_s: f64,
    /// Holds seen.
    pub count: u64,
    /// Holds seen in one sample only: counted, not timed.
    #[serde(default)]
    pub untimed: u64,
    /// Holds per mode, `RESERVED→EXCLUSIVE` when a hold rose.
    #[serde(default)]
    pub modes: BTreeMap<String, u64>,
    /// A daemon's own write-lock time over the same window: the sum of
    /// acquired..end of its trace's attempts that obtained the lock.
    #[serde(default)]
    pub trace_total_s: Option<f64>,
    /// How many of its trace's attempts obtained the lock in that window.
    #[serde(default)]
    pub trace_count: Option<u64>,
    /// (total_s - trace_total_s) / trace_total_s.
    #[serde(default)]
    pub disagreement: Option<f64>,
    /// The two differ by more than [`DISAGREEMENT_LIMIT`].
    #[serde(default)]
    pub flagged: bool,
    /// The sampling error to expect on `total_s`: about two standard
    /// deviations, 2 × interval × √(trace attempts). A difference below it is
    /// noise at this interval, whatever its percentage.
    #[serde(default)]
    pub resolution_s: Option<f64>,
}

/// How the witness sampled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Witness {
    pub interval_ms: f64,
    pub samples: u64,
    pub samples_per_s: f64,
    pub max_gap_ms: f64,
    pub sampled_s: f64,
    /// CPU time of the sampling thread over its wall time.
    pub cpu_share: f64,
    pub source: String,
    pub resolution: String,
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// Each daemon instance's write-lock time and count within `window`
/// (wall-clock µs), by PID (a restarted daemon has one trace per instance):
/// acquired..end of every attempt that obtained the lock (committed, rolled
/// back or failed), clipped to the window.
pub fn trace_totals(
    traces: &[(i32, PathBuf)],
    window: (i64, i64),
) -> anyhow::Result<BTreeMap<i32, (f64, u64)>> {
    let mut totals: BTreeMap<i32, (f64, u64)> = BTreeMap::new();
    for (pid, t) in traces {
        if !t.exists() {
            // An instance killed before its first trace write.
            continue;
        }
        let events = read_trace(t).with_context(|| format!("reading the trace {}", t.display()))?;
        for e in events {
            let Some(acquired) = e.acquired_us else {
                continue;
            };
            let (a, b) = (acquired.max(window.0), e.end_us.min(window.1));
            let slot = totals.entry(*pid).or_insert((0.0, 0));
            if b > a {
                slot.0 += (b - a) as f64 / 1e6;
            }
            if e.end_us >= window.0 && acquired <= window.1 {
                slot.1 += 1;
            }
        }
    }
    Ok(totals)
}

/// The holders of a run: every PID the witness saw, plus every daemon, with
/// the daemons' own trace figures beside the OS's.
pub fn holders(
    who: &WhoReport,
    daemons: &HashMap<i32, String>,
    traces: &BTreeMap<i32, (f64, u64)>,
) -> Vec<Holder> {
    let own = i32::try_from(std::process::id()).unwrap_or(0);
    let label = |pid: i32| -> Option<String> {
        daemons
            .get(&pid)
            .cloned()
            .or_else(|| (pid == own).then(|| SELF_NAME.to_string()))
    };
    let mut rows: Vec<Holder> = who
        .holders
        .iter()
        .map(|h| Holder {
            pid: h.pid,
            name: h.name.clone(),
            cmdline: h.cmdline.clone(),
            container: h.container.clone(),
            process: label(h.pid),
            total_s: h.total_s,
            longest_s: h.longest_s,
            count: h.count,
            untimed: h.untimed,
            modes: h.modes.clone(),
            trace_total_s: None,
            trace_count: None,
            disagreement: None,
            flagged: false,
            resolution_s: None,
        })
        .collect();
    let mut names: Vec<(&i32, &String)> = daemons.iter().collect();
    names.sort_by_key(|(pid, _)| **pid);
    for (pid, name) in names {
        if !rows.iter().any(|r| r.pid == *pid) {
            rows.push(Holder {
                pid: *pid,
                name: name.clone(),
                cmdline: String::new(),
                container: None,
                process: Some(name.clone()),
                total_s: 0.0,
                longest_s: 0.0,
                count: 0,
                untimed: 0,
                modes: BTreeMap::new(),
                trace_total_s: None,
                trace_count: None,
                disagreement: None,
                flagged: false,
                resolution_s: None,
            });
        }
    }
    for r in &mut rows {
        let Some(process) = r.process.as_deref() else {
            continue;
        };
        if !daemons.values().any(|d| d == process) {
            continue;
        }
        let (trace_s, trace_n) = traces.get(&r.pid).copied().unwrap_or((0.0, 0));
        r.trace_total_s = Some(trace_s);
        r.trace_count = Some(trace_n);
        r.resolution_s = Some(2.0 * who.interval_us as f64 / 1e6 * (trace_n.max(1) as f64).sqrt());
        if trace_s > 0.0 {
            let d = (r.total_s - trace_s) / trace_s;
            r.disagreement = Some(d);
            r.flagged = d.abs() > DISAGREEMENT_LIMIT;
        } else {
            r.flagged = r.total_s > 0.0;
        }
    }
    rows
}

/// How the witness sampled, for report.json.
pub fn witness(who: &WhoReport) -> Witness {
    Witness {
        interval_ms: who.interval_us as f64 / 1e3,
        samples: who.samples,
        samples_per_s: who.samples_per_s,
        max_gap_ms: who.max_gap_us as f64 / 1e3,
        sampled_s: who.sampled_s,
        cpu_share: who.cpu_share,
        source: who.source.clone(),
        resolution: who.resolution.clone(),
        warnings: who.warnings.clone(),
    }
}

/// Whether a flagged difference is beyond the sampling error, in words.
fn resolution_clause(h: &Holder) -> String {
    let diff = (h.total_s - h.trace_total_s.unwrap_or(0.0)).abs();
    match h.resolution_s {
        Some(r) if diff <= r => format!(
            "the difference, {}, is within the sampling error (about ±{} for {} holds at this \
             interval), so it is noise, not a disagreement the lab can claim",
            fmt_secs(diff),
            fmt_secs(r),
            h.trace_count.unwrap_or(0)
        ),
        Some(r) => format!(
            "the difference, {}, is beyond the sampling error (about ±{}): the trace and the OS \
             do not see the same hold time",
            fmt_secs(diff),
            fmt_secs(r)
        ),
        None => String::new(),
    }
}

fn times(n: u64) -> String {
    match n {
        1 => "once".to_string(),
        2 => "twice".to_string(),
        n => format!("{n} times"),
    }
}

fn percent(d: Option<f64>) -> String {
    d.map(|d| format!("{:+.1}%", d * 100.0))
        .unwrap_or_else(|| "n/a".to_string())
}

/// A foreign holder's name for the verdict and the tables: its process name
/// and its arguments (argv[0] is often a long interpreter path), e.g.
/// `pid 4242 python3 manage.py runserver`.
pub fn foreign_label(h: &Holder, width: usize) -> String {
    format!(
        "pid {} {}",
        h.pid,
        short_command(&h.name, &h.cmdline, width)
    )
}

/// The verdict's witness lines: the agreement per daemon, each disagreement
/// over 10%, and every foreign or unseen holder by name.
pub fn verdict_lines(holders: &[Holder], w: Option<&Witness>, busy_timeout_ms: u64) -> Vec<String> {
    let mut lines = Vec::new();
    let Some(w) = w else {
        return lines;
    };
    let daemons: Vec<&Holder> = holders
        .iter()
        .filter(|h| h.trace_total_s.is_some())
        .collect();
    if !daemons.is_empty() {
        let parts: Vec<String> = daemons
            .iter()
            .map(|h| {
                format!(
                    "{} {} vs {} ({})",
                    h.process.as_deref().unwrap_or(&h.name),
                    fmt_secs(h.trace_total_s.unwrap_or(0.0)),
                    fmt_secs(h.total_s),
                    percent(h.disagreement)
                )
            })
            .collect();
        lines.push(format!(
            "witness: write-lock time by each daemon's own trace vs as the OS saw it (locklab who, \
             every {} ms asked, {:.0} samples/s achieved): {}.",
            w.interval_ms,
            w.samples_per_s,
            parts.join(", ")
        ));
    }
    for h in daemons.iter().filter(|h| h.flagged) {
        lines.push(format!(
            "witness: {}: its trace and the OS disagree by more than {:.0}%: trace {} over {} \
             attempts, OS {} over {} holds ({} untimed); {}.",
            h.process.as_deref().unwrap_or(&h.name),
            DISAGREEMENT_LIMIT * 100.0,
            fmt_secs(h.trace_total_s.unwrap_or(0.0)),
            h.trace_count.unwrap_or(0),
            fmt_secs(h.total_s),
            h.count,
            h.untimed,
            resolution_clause(h)
        ));
    }
    for h in holders.iter().filter(|h| h.process.is_none()) {
        let modes: Vec<String> = h.modes.keys().cloned().collect();
        let who = if h.pid == 0 {
            "an unseen process (outside this PID namespace; run locklab where it can see it to \
             name it)"
                .to_string()
        } else {
            format!("{} (not one of the lab's processes)", foreign_label(h, 60))
        };
        let longest = if h.count > h.untimed {
            format!("longest {}", fmt_secs(h.longest_s))
        } else {
            "each seen in one sample only".to_string()
        };
        lines.push(format!(
            "foreign holder: {who} held the write lock {}, {} ({longest}, {}); the busy timeout is \
             {busy_timeout_ms} ms.",
            fmt_secs(h.total_s),
            times(h.count),
            modes.join("/")
        ));
    }
    lines
}

/// The holders table of the run's text report.
pub fn holders_table(holders: &[Holder]) -> comfy_table::Table {
    use comfy_table::presets::UTF8_FULL_CONDENSED;
    use comfy_table::{Cell, CellAlignment, ContentArrangement, Table};
    let right = |s: String| Cell::new(s).set_alignment(CellAlignment::Right);
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(vec![
            "holder",
            "pid",
            "OS: holds",
            "OS: total",
            "OS: longest",
            "trace: attempts",
            "trace: total",
            "difference",
        ]);
    for h in holders {
        t.add_row(vec![
            Cell::new(match &h.process {
                Some(p) => p.clone(),
                None => format!("foreign: {}", foreign_label(h, 40)),
            }),
            right(h.pid.to_string()),
            right(h.count.to_string()),
            right(fmt_secs(h.total_s)),
            right(if h.count > h.untimed {
                fmt_secs(h.longest_s)
            } else {
                "-".to_string()
            }),
            right(h.trace_count.map(|n| n.to_string()).unwrap_or_default()),
            right(h.trace_total_s.map(fmt_secs).unwrap_or_default()),
            right(match (h.trace_total_s, h.flagged) {
                (None, _) => String::new(),
                (Some(t), true) => {
                    let noise = h.resolution_s.is_some_and(|r| (h.total_s - t).abs() <= r);
                    if noise {
                        format!("{} (noise)", percent(h.disagreement))
                    } else {
                        format!("{} ⚠", percent(h.disagreement))
                    }
                }
                (Some(_), false) => percent(h.disagreement),
            }),
        ]);
    }
    t
}

/// The witness block of the run's text report (empty without a witness).
pub fn render_text(holders: &[Holder], w: Option<&Witness>) -> String {
    let Some(w) = w else {
        return String::new();
    };
    let mut out = format!(
        "who held the write lock (OS-observed by locklab who, {:.0} samples/s, sampler CPU {:.1}% of one core):\n{}\n",
        w.samples_per_s,
        w.cpu_share * 100.0,
        holders_table(holders)
    );
    for warning in &w.warnings {
        out.push_str(&format!("witness warning: {warning}\n"));
    }
    out
}

/// The OS-observed lanes of the timeline, from a run's `who.json`: one per
/// PID that held the write lock, named after its lab process (the daemons'
/// lanes then sit beside their traces) or `pid N name` for a foreign one.
pub fn timeline_lanes(who: &WhoReport) -> Vec<crate::timeline::OsLane> {
    let mut lanes: Vec<crate::timeline::OsLane> = Vec::new();
    for h in &who.holders {
        let spans: Vec<(i64, i64)> = who
            .holds
            .iter()
            .filter(|x| x.pid == h.pid)
            .map(|x| (x.start_us, x.end_us))
            .collect();
        // A restarted daemon has one lane per instance: the PID tells them apart.
        let instances = who
            .holders
            .iter()
            .filter(|o| o.process.is_some() && o.process == h.process)
            .count();
        let (label, process) = match &h.process {
            Some(p) if instances > 1 => (format!("{p} · OS (pid {})", h.pid), Some(p.clone())),
            Some(p) => (format!("{p} · OS"), Some(p.clone())),
            None => (
                format!(
                    "pid {} {}",
                    h.pid,
                    if h.pid == 0 {
                        "unseen"
                    } else {
                        h.name.as_str()
                    }
                ),
                None,
            ),
        };
        lanes.push(crate::timeline::OsLane {
            label,
            process,
            title: format!(
                "pid {} {}: {} holds, {} in all (OS-observed)",
                h.pid,
                h.cmdline,
                h.count,
                fmt_secs(h.total_s)
            ),
            spans,
        });
    }
    lanes
}

/// Reads `DIR/who.json` if the run wrote one.
pub fn read_who(dir: &Path) -> anyhow::Result<Option<WhoReport>> {
    let path = dir.join(WHO_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let r = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a locklab who report", path.display()))?;
    Ok(Some(r))
}
