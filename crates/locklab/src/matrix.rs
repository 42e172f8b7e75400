//! `locklab matrix`: the same load under several presets, repeated; one
//! comparison table (preset × process) with min/median/max over the repeats,
//! and matrix.md, matrix.json and an SVG chart of failures per process per
//! preset.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, CellAlignment, Table};
use schema::error::LockClass;
use serde::{Deserialize, Serialize};
use svg::node::element::{Rectangle, Text, Title};
use svg::Document;

use crate::report::Report;

/// min / median / max of a figure over the repeats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(mut v: Vec<f64>) -> Spread {
        if v.is_empty() {
            return Spread::default();
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Spread {
            min: v[0],
            median,
            max: v[v.len() - 1],
        }
    }

    fn show(&self, digits: usize) -> String {
        if self.min == self.max {
            format!("{:.digits$}", self.median)
        } else {
            format!(
                "{:.digits$} ({:.digits$}–{:.digits$})",
                self.median, self.min, self.max
            )
        }
    }
}

/// One cell row of the matrix: a preset and a process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatrixRow {
    pub preset: String,
    /// The backend the preset ran on (added field).
    #[serde(default)]
    pub backend: String,
    pub process: String,
    pub ok: Spread,
    pub gave_up: Spread,
    pub failed: BTreeMap<String, Spread>,
    pub p95_ms: Spread,
    pub rows_per_s: Spread,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Matrix {
    pub presets: Vec<String>,
    pub repeat: u32,
    pub rows: Vec<MatrixRow>,
    /// Every run's report, preset by preset.
    pub runs: BTreeMap<String, Vec<Report>>,
}

/// Builds the matrix from every run's report.
pub fn build(presets: &[String], repeat: u32, runs: BTreeMap<String, Vec<Report>>) -> Matrix {
    let mut rows = Vec::new();
    for preset in presets {
        let reports = runs.get(preset).cloned().unwrap_or_default();
        let mut names: Vec<String> = Vec::new();
        for r in &reports {
            for p in &r.processes {
                if !names.contains(&p.name) {
                    names.push(p.name.clone());
                }
            }
        }
        for name in names {
            let of = |f: &dyn Fn(&schema::stats::ProcessReport) -> f64| {
                Spread::of(
                    reports
                        .iter()
                        .filter_map(|r| r.processes.iter().find(|p| p.name == name))
                        .map(f)
                        .collect(),
                )
            };
            let mut failed = BTreeMap::new();
            for class in LockClass::ALL {
                let s = of(&|p| p.failed_of(class) as f64);
                if s.max > 0.0 {
                    failed.insert(class.as_str().to_string(), s);
                }
            }
            rows.push(MatrixRow {
                preset: preset.clone(),
                backend: reports
                    .first()
                    .map(|r| r.backend.clone())
                    .unwrap_or_default(),
                process: name.clone(),
                ok: of(&|p| p.ok as f64),
                gave_up: of(&|p| p.gave_up as f64),
                failed,
                p95_ms: of(&|p| p.latency_ms.p95),
                rows_per_s: of(&|p| p.rows_per_s),
            });
        }
    }
    Matrix {
        presets: presets.to_vec(),
        repeat,
        rows,
        runs,
    }
}

const SHOWN: [LockClass; 3] = [
    LockClass::BusyUpgrade,
    LockClass::BusySnapshot,
    LockClass::BusyTimeout,
];

/// A server's lock classes, shown as one column when a preset ran on a server.
const SERVER: [LockClass; 3] = [
    LockClass::Serialization,
    LockClass::Deadlock,
    LockClass::LockWaitTimeout,
];

impl MatrixRow {
    fn class(&self, c: LockClass) -> String {
        self.failed
            .get(c.as_str())
            .map(|s| s.show(0))
            .unwrap_or_else(|| "0".to_string())
    }

    /// serialization + deadlock + lock_wait_timeout, by their medians.
    fn server_failures(&self) -> String {
        // fold from +0.0: an empty f64 sum is -0.0, shown as "-0"
        let n: f64 = SERVER
            .iter()
            .filter_map(|c| self.failed.get(c.as_str()))
            .fold(0.0, |n, s| n + s.median);
        format!("{n:.0}")
    }
}

fn on_servers(m: &Matrix) -> bool {
    m.rows
        .iter()
        .any(|r| !r.backend.is_empty() && r.backend != "sqlite")
}

/// The comparison table. When a preset ran on a server the table names each
/// preset's backend and adds the server's lock classes (serialization,
/// deadlock, lock_wait_timeout) as one column.
pub fn table(m: &Matrix) -> Table {
    let servers = on_servers(m);
    let mut t = Table::new();
    let mut header = vec!["preset"];
    if servers {
        header.push("backend");
    }
    header.extend([
        "process",
        "ok",
        "gave_up",
        "busy_upgrade",
        "busy_snapshot",
        "busy_timeout",
    ]);
    if servers {
        header.push("server lock failures");
    }
    header.extend(["p95 ms", "rows/s"]);
    t.load_preset(UTF8_FULL_CONDENSED).set_header(header);
    for r in &m.rows {
        let right = |s: String| Cell::new(s).set_alignment(CellAlignment::Right);
        let mut row = vec![Cell::new(&r.preset)];
        if servers {
            row.push(Cell::new(&r.backend));
        }
        row.extend([
            Cell::new(&r.process),
            right(r.ok.show(0)),
            right(r.gave_up.show(0)),
            right(r.class(SHOWN[0])),
            right(r.class(SHOWN[1])),
            right(r.class(SHOWN[2])),
        ]);
        if servers {
            row.push(right(r.server_failures()));
        }
        row.extend([right(r.p95_ms.show(1)), right(r.rows_per_s.show(0))]);
        t.add_row(row);
    }
    t
}

pub fn markdown(m: &Matrix) -> String {
    let servers = on_servers(m);
    let mut out = format!(
        "# locklab matrix\n\n{} preset(s), {} repeat(s) each; cells are the median (min–max).\n\n",
        m.presets.len(),
        m.repeat
    );
    if servers {
        out.push_str("| preset | backend | process | ok | gave_up | busy_upgrade | busy_snapshot | busy_timeout | server lock failures | p95 ms | rows/s |\n");
        out.push_str("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    } else {
        out.push_str("| preset | process | ok | gave_up | busy_upgrade | busy_snapshot | busy_timeout | p95 ms | rows/s |\n");
        out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    }
    for r in &m.rows {
        let mut cells = vec![r.preset.clone()];
        if servers {
            cells.push(r.backend.clone());
        }
        cells.extend([
            r.process.clone(),
            r.ok.show(0),
            r.gave_up.show(0),
            r.class(SHOWN[0]),
            r.class(SHOWN[1]),
            r.class(SHOWN[2]),
        ]);
        if servers {
            cells.push(r.server_failures());
        }
        cells.extend([r.p95_ms.show(1), r.rows_per_s.show(0)]);
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out.push_str("\n![failures per process per preset](matrix.svg)\n");
    out
}

/// A round upper bound for an axis: 1, 2 or 5 times a power of ten.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

/// Small multiples: one panel per process, each with its own linear scale
/// (so one preset's thousands of failures cannot flatten every other
/// process to nothing), a bar per preset stacked by class, the total above
/// each bar, and labelled axes.
pub fn chart(m: &Matrix) -> Document {
    let processes: Vec<String> = {
        let mut v: Vec<String> = Vec::new();
        for r in &m.rows {
            if !v.contains(&r.process) {
                v.push(r.process.clone());
            }
        }
        v
    };
    // `+ 0.0`: an empty f64 sum is -0.0, which would print as "-0".
    let total = |r: &MatrixRow| r.failed.values().map(|s| s.median).sum::<f64>() + 0.0;
    let slot = 64.0;
    let (left, top, plot_h, gap) = (78.0, 70.0, 110.0, 92.0);
    let plot_w = slot * m.presets.len().max(1) as f64;
    let width = (left + plot_w + 190.0).max(560.0);
    let height = top + (plot_h + gap) * processes.len().max(1) as f64 + 10.0;
    let mut doc = Document::new()
        .set("viewBox", (0, 0, width, height))
        .set("width", width)
        .set("height", height)
        .set("font-family", "sans-serif")
        .set("font-size", 11)
        .add(
            Rectangle::new()
                .set("width", "100%")
                .set("height", "100%")
                .set("fill", "white"),
        )
        .add(
            Text::new("failed attempts per preset (median of repeats)")
                .set("x", 10)
                .set("y", 18)
                .set("font-size", 14),
        )
        .add(
            Text::new("one panel per process, each on its own scale: compare bars within a panel")
                .set("x", 10)
                .set("y", 34)
                .set("fill", "#444"),
        );
    for (pi, process) in processes.iter().enumerate() {
        let y0 = top + pi as f64 * (plot_h + gap);
        let base = y0 + plot_h;
        let rows: Vec<&MatrixRow> = m.rows.iter().filter(|r| &r.process == process).collect();
        let max = nice_max(rows.iter().map(|r| total(r)).fold(0.0, f64::max));
        doc = doc.add(
            Text::new(process.clone())
                .set("x", left)
                .set("y", y0 - 8.0)
                .set("font-weight", "bold"),
        );
        // The y axis: gridlines and labels at 0, half and the top.
        for frac in [0.0, 0.5, 1.0] {
            let y = base - frac * plot_h;
            doc = doc
                .add(
                    svg::node::element::Line::new()
                        .set("x1", left)
                        .set("x2", left + plot_w)
                        .set("y1", y)
                        .set("y2", y)
                        .set("stroke", if frac == 0.0 { "#333" } else { "#ddd" }),
                )
                .add(
                    Text::new(if (frac * max).fract() == 0.0 {
                        format!("{:.0}", frac * max)
                    } else {
                        format!("{:.1}", frac * max)
                    })
                    .set("x", left - 6.0)
                    .set("y", y + 4.0)
                    .set("text-anchor", "end"),
                );
        }
        let (lx, ly) = (16.0, y0 + plot_h / 2.0);
        doc = doc.add(
            Text::new("failed attempts")
                .set("x", lx)
                .set("y", ly)
                .set("text-anchor", "middle")
                .set("transform", format!("rotate(-90 {lx} {ly})")),
        );
        for (gi, preset) in m.presets.iter().enumerate() {
            let x = left + gi as f64 * slot + 12.0;
            let bar_w = slot - 24.0;
            if let Some(row) = rows.iter().find(|r| &r.preset == preset) {
                let mut y = base;
                for (class, s) in &row.failed {
                    let h = s.median / max * plot_h;
                    if h <= 0.0 {
                        continue;
                    }
                    y -= h;
                    let color = class
                        .parse::<LockClass>()
                        .map(crate::timeline::class_color)
                        .unwrap_or("#7f7f7f");
                    doc = doc.add(
                        Rectangle::new()
                            .set("x", x)
                            .set("y", y)
                            .set("width", bar_w)
                            .set("height", h)
                            .set("fill", color)
                            .add(Title::new(format!(
                                "{preset} · {process}: {:.0} {class}",
                                s.median
                            ))),
                    );
                }
                doc = doc.add(
                    Text::new(format!("{:.0}", total(row)))
                        .set("x", x + bar_w / 2.0)
                        .set("y", y - 3.0)
                        .set("text-anchor", "middle"),
                );
            }
            let (tx, ty) = (x + bar_w / 2.0, base + 14.0);
            doc = doc.add(
                Text::new(preset.clone())
                    .set("x", tx)
                    .set("y", ty)
                    .set("text-anchor", "start")
                    .set("transform", format!("rotate(25 {tx} {ty})")),
            );
        }
    }
    let lx = left + plot_w + 24.0;
    doc = doc.add(
        Text::new("lock class")
            .set("x", lx)
            .set("y", top)
            .set("font-weight", "bold"),
    );
    for (i, class) in SHOWN.iter().chain([LockClass::Other].iter()).enumerate() {
        let y = top + 10.0 + 15.0 * i as f64;
        doc = doc
            .add(
                Rectangle::new()
                    .set("x", lx)
                    .set("y", y)
                    .set("width", 10)
                    .set("height", 10)
                    .set("fill", crate::timeline::class_color(*class)),
            )
            .add(
                Text::new(class.as_str())
                    .set("x", lx + 14.0)
                    .set("y", y + 9.0),
            );
    }
    doc
}

pub fn write(out: &Path, m: &Matrix) -> anyhow::Result<()> {
    std::fs::write(
        out.join("matrix.json"),
        serde_json::to_vec_pretty(m).context("serialising")?,
    )
    .context("writing matrix.json")?;
    std::fs::write(out.join("matrix.md"), markdown(m)).context("writing matrix.md")?;
    svg::save(out.join("matrix.svg"), &chart(m)).context("writing matrix.svg")?;
    Ok(())
}
