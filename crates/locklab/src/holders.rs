//! Who held the write lock when a process failed, from the lab's own traces.
//!
//! For each failed attempt of a process, the holder is the other process whose
//! traced hold (`acquired_us`..`end_us` of an attempt that got the lock) covers
//! the failure's moment (`end_us`); when none covers it, the one whose holds
//! overlap the failed attempt's wait the most. A failure with no traced holder
//! is counted as such: the lock was held by something the lab does not trace
//! (another program, see `locklab who`), or by a hold too short to overlap.
//!
//! The verdict prints one line per failing process in a fixed form that other
//! tools read: `webui: buildinfohelper held it at 8 of 8`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schema::trace::{read_trace, TraceEvent};
use serde::{Deserialize, Serialize};

/// The holders at one process's failures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HoldersAtFailures {
    pub process: String,
    /// Failed attempts in the process's trace.
    pub failures: u64,
    /// How many of them each other process held the lock at.
    pub held_by: BTreeMap<String, u64>,
    /// Failures with no traced holder.
    pub untraced: u64,
}

impl HoldersAtFailures {
    /// `webui: buildinfohelper held it at 8 of 8` (the top holder; ties by name).
    pub fn line(&self) -> Option<String> {
        if self.failures == 0 {
            return None;
        }
        let top = self
            .held_by
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)));
        let mut line = match top {
            Some((holder, n)) => format!(
                "{}: {holder} held it at {n} of {}",
                self.process, self.failures
            ),
            None => format!(
                "{}: no traced process held it at its {} failures",
                self.process, self.failures
            ),
        };
        let others: Vec<String> = self
            .held_by
            .iter()
            .filter(|(h, _)| Some(h.as_str()) != top.map(|t| t.0.as_str()))
            .map(|(h, n)| format!("{h} at {n}"))
            .collect();
        if !others.is_empty() {
            line.push_str(&format!("; {}", others.join(", ")));
        }
        if self.untraced > 0 && top.is_some() {
            line.push_str(&format!(
                "; no traced holder at {} (another program? see `locklab who`)",
                self.untraced
            ));
        }
        Some(line)
    }
}

struct Hold {
    process: String,
    txn: u64,
    from: i64,
    to: i64,
}

/// Reads the traces and attributes every failure.
pub fn at_failures(traces: &[PathBuf]) -> Vec<HoldersAtFailures> {
    let mut events: Vec<TraceEvent> = Vec::new();
    for t in traces {
        if let Ok(mut e) = read_trace(t) {
            events.append(&mut e);
        }
    }
    attribute(&events)
}

/// Every traced hold, sorted, to ask who held the lock at a failure.
pub struct Holds {
    holds: Vec<Hold>,
    longest: i64,
}

impl Holds {
    pub fn new(events: &[TraceEvent]) -> Holds {
        let mut holds: Vec<Hold> = events
            .iter()
            .filter_map(|e| {
                e.acquired_us.map(|a| Hold {
                    process: e.process.clone(),
                    txn: e.txn,
                    from: a,
                    to: e.end_us.max(a),
                })
            })
            .collect();
        holds.sort_by_key(|h| h.from);
        let longest = holds.iter().map(|h| h.to - h.from).max().unwrap_or(0);
        Holds { holds, longest }
    }

    /// Who held the lock at `f`'s failure: the process whose hold covers its
    /// moment, else the one whose holds overlap its wait most. A hold of the
    /// failing process's own transaction does not count; another connection
    /// of the same process does, named `NAME (another connection)`.
    pub fn holder_of(&self, f: &TraceEvent) -> Option<String> {
        let (w0, t) = (f.wait_start_us, f.end_us);
        let lo = self
            .holds
            .partition_point(|h| h.from < w0.saturating_sub(self.longest));
        let hi = self.holds.partition_point(|h| h.from <= t);
        let mut at_moment: Option<(&str, bool)> = None;
        let mut overlap: BTreeMap<(&str, bool), i64> = BTreeMap::new();
        for h in &self.holds[lo..hi] {
            let same = h.process == f.process;
            if same
                && (f.txn != 0 && h.txn == f.txn
                    || (h.from, h.to) == (f.acquired_us.unwrap_or(i64::MIN), f.end_us))
            {
                continue; // the failing transaction itself
            }
            let key = (h.process.as_str(), same);
            if h.from <= t && t <= h.to && at_moment.is_none_or(|(_, s)| s && !same) {
                at_moment = Some(key);
            }
            let o = h.to.min(t) - h.from.max(w0);
            if o > 0 {
                *overlap.entry(key).or_default() += o;
            }
        }
        at_moment
            .or_else(|| overlap.iter().max_by_key(|(_, o)| **o).map(|(k, _)| *k))
            .map(|(p, same)| {
                if same {
                    format!("{p} (another connection)")
                } else {
                    p.to_string()
                }
            })
    }
}

/// Attributes every failed attempt in `events` to a holder.
pub fn attribute(events: &[TraceEvent]) -> Vec<HoldersAtFailures> {
    let holds = Holds::new(events);
    let mut out: BTreeMap<String, HoldersAtFailures> = BTreeMap::new();
    for f in events.iter().filter(|e| e.outcome == "failed") {
        let entry = out
            .entry(f.process.clone())
            .or_insert_with(|| HoldersAtFailures {
                process: f.process.clone(),
                ..HoldersAtFailures::default()
            });
        entry.failures += 1;
        match holds.holder_of(f) {
            Some(p) => *entry.held_by.entry(p).or_default() += 1,
            None => entry.untraced += 1,
        }
    }
    out.into_values().collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ev(process: &str, w: i64, a: Option<i64>, end: i64, outcome: &str) -> TraceEvent {
        TraceEvent {
            process: process.to_string(),
            op: "op".to_string(),
            kind: "txn".to_string(),
            wait_start_us: w,
            acquired_us: a,
            end_us: end,
            outcome: outcome.to_string(),
            class: None,
            txn: 0,
            attempt: 1,
            phase: None,
            waited_ms: None,
            code: None,
            server_code: None,
            seen: None,
        }
    }

    #[test]
    fn the_holder_at_each_failure() {
        let events = vec![
            ev("buildinfohelper", 0, Some(0), 100, "commit"),
            ev("buildinfohelper", 150, Some(150), 300, "commit"),
            ev("webui", 10, None, 50, "failed"), // inside the first hold
            ev("webui", 120, None, 200, "failed"), // at t=200 inside the second
            ev("webui", 310, None, 400, "failed"), // nobody holds: untraced
            ev("runbuilds", 90, None, 140, "failed"), // overlaps the first hold only
        ];
        let r = attribute(&events);
        let webui = r.iter().find(|h| h.process == "webui").unwrap();
        assert_eq!(webui.failures, 3);
        assert_eq!(webui.held_by.get("buildinfohelper"), Some(&2));
        assert_eq!(webui.untraced, 1);
        assert_eq!(
            webui.line().unwrap(),
            "webui: buildinfohelper held it at 2 of 3; no traced holder at 1 (another program? see `locklab who`)"
        );
        let rb = r.iter().find(|h| h.process == "runbuilds").unwrap();
        assert_eq!(
            rb.line().unwrap(),
            "runbuilds: buildinfohelper held it at 1 of 1"
        );
        assert!(r.iter().all(|h| h.process != "buildinfohelper"));

        // Another connection of the same process counts, named as such; the
        // failing transaction's own hold does not.
        let mut own = ev("webui", 500, Some(500), 600, "commit");
        own.txn = 7;
        let mut failed_in_own = ev("webui", 550, None, 590, "failed");
        failed_in_own.txn = 7;
        let mut other = ev("webui", 700, Some(700), 800, "commit");
        other.txn = 9;
        let mut failed = ev("webui", 710, None, 750, "failed");
        failed.txn = 3;
        let r = attribute(&[own, failed_in_own, other, failed]);
        let w = &r[0];
        assert_eq!(w.failures, 2);
        assert_eq!(w.held_by.get("webui (another connection)"), Some(&1));
        assert_eq!(w.untraced, 1);
    }
}
