//! `locklab matrix --ablate FROM,TO`: which knob bought what. It runs FROM,
//! then FROM with each knob where TO differs changed alone, then TO, under the
//! same load, and prints each variant's failures by class, requests served,
//! committed rows/s and webui p99, with the durability label where it applies.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, CellAlignment, ContentArrangement, Table};
use schema::error::LockClass;
use schema::settings::{fmt_duration, JournalMode, Preset, Synchronous};
use serde::Serialize;

use crate::report::Report;

/// One knob where the two presets differ: its flag, and TO's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KnobChange {
    /// The setting's key (`journal_mode`).
    pub knob: &'static str,
    /// The daemons' flag (`--journal-mode`).
    pub flag: &'static str,
    pub from: String,
    pub to: String,
    /// What the change costs besides time, if anything.
    pub cost: Option<&'static str>,
}

/// The knobs where `to` differs from `from`, in a fixed order.
pub fn differences(from: &Preset, to: &Preset) -> Vec<KnobChange> {
    let mut v = Vec::new();
    let mut push = |knob, flag, a: String, b: String, cost| {
        if a != b {
            v.push(KnobChange {
                knob,
                flag,
                from: a,
                to: b,
                cost,
            });
        }
    };
    for ((d, a, _), (_, b, _)) in from.knobs.describe().into_iter().zip(to.knobs.describe()) {
        let cost = (d.key == "synchronous" && b != Synchronous::Full.to_string())
            .then_some("durability: a power loss or OS crash can lose the last transactions");
        push(d.key, d.flag, a, b, cost);
    }
    let pace = |p: &Preset| {
        p.event_delay
            .map(fmt_duration)
            .unwrap_or_else(|| "0s".to_string())
    };
    push("event_delay", "--event-delay", pace(from), pace(to), None);
    v
}

/// Where a journal-mode change goes: it belongs to the file, set by migrate.
pub fn journal_of(change: &KnobChange) -> Option<JournalMode> {
    (change.knob == "journal_mode")
        .then(|| change.to.parse().ok())
        .flatten()
}

/// One variant's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub variant: String,
    pub cost: Option<String>,
    pub busy_upgrade: u64,
    pub busy_snapshot: u64,
    pub busy_timeout: u64,
    pub other: u64,
    pub gave_up: u64,
    pub requests_ok: u64,
    pub rows_per_s: f64,
    pub webui_p99_ms: f64,
}

impl Row {
    pub fn of(variant: String, cost: Option<String>, r: &Report) -> Row {
        let sum = |c: LockClass| r.processes.iter().map(|p| p.failed_of(c)).sum::<u64>();
        let all: u64 = r.processes.iter().map(|p| p.failed_total()).sum();
        let (up, snap, to) = (
            sum(LockClass::BusyUpgrade),
            sum(LockClass::BusySnapshot),
            sum(LockClass::BusyTimeout),
        );
        Row {
            variant,
            cost,
            busy_upgrade: up,
            busy_snapshot: snap,
            busy_timeout: to,
            other: all - up - snap - to,
            gave_up: r.gave_up_total(),
            requests_ok: r
                .loadgen
                .status
                .iter()
                .filter(|(s, _)| s.starts_with('2'))
                .map(|(_, n)| n)
                .sum(),
            rows_per_s: r.processes.iter().map(|p| p.rows_per_s).sum(),
            webui_p99_ms: r
                .processes
                .iter()
                .find(|p| p.name == "webui")
                .map(|p| p.latency_ms.p99)
                .unwrap_or(0.0),
        }
    }
}

fn num(n: u64) -> Cell {
    Cell::new(n).set_alignment(CellAlignment::Right)
}

/// The ablation table (fits 120 columns; costs below their row).
pub fn table(rows: &[Row]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(120)
        .set_header(vec![
            "variant",
            "busy\nupgrade",
            "busy\nsnapshot",
            "busy\ntimeout",
            "other",
            "gave\nup",
            "requests\nok",
            "rows/s",
            "webui\np99 ms",
        ]);
    for r in rows {
        // "FROM + knob=value" reads as "+ knob=value" under FROM's row.
        let label = match r.variant.split_once(" + ") {
            Some((_, knob)) => format!("+ {knob}"),
            None => r.variant.clone(),
        };
        let variant = match &r.cost {
            Some(c) => format!("{label}\n({c})"),
            None => label,
        };
        t.add_row(vec![
            Cell::new(variant),
            num(r.busy_upgrade),
            num(r.busy_snapshot),
            num(r.busy_timeout),
            num(r.other),
            num(r.gave_up),
            num(r.requests_ok),
            Cell::new(format!("{:.0}", r.rows_per_s)).set_alignment(CellAlignment::Right),
            Cell::new(format!("{:.0}", r.webui_p99_ms)).set_alignment(CellAlignment::Right),
        ]);
    }
    t
}

/// Writes ablation.md and ablation.json.
pub fn write(out: &Path, from: &str, to: &str, rows: &[Row]) -> anyhow::Result<()> {
    let json = serde_json::json!({ "from": from, "to": to, "rows": rows });
    std::fs::write(
        out.join("ablation.json"),
        serde_json::to_vec_pretty(&json).context("serialising the ablation")?,
    )
    .context("writing ablation.json")?;
    let mut md = format!(
        "# Ablation: {from} → {to}\n\nEach row changes one knob of {from} to {to}'s value, alone.\n\n\
         | variant | busy_upgrade | busy_snapshot | busy_timeout | other | gave up | requests ok | rows/s | webui p99 ms |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for r in rows {
        let _ = writeln!(
            md,
            "| {}{} | {} | {} | {} | {} | {} | {} | {:.0} | {:.0} |",
            r.variant,
            r.cost
                .as_ref()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default(),
            r.busy_upgrade,
            r.busy_snapshot,
            r.busy_timeout,
            r.other,
            r.gave_up,
            r.requests_ok,
            r.rows_per_s,
            r.webui_p99_ms
        );
    }
    std::fs::write(out.join("ablation.md"), md).context("writing ablation.md")
}
