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

/// The comparison table.
pub fn table(m: &Matrix) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "preset",
        "process",
        "ok",
        "gave_up",
        "busy_upgrade",
        "busy_snapshot",
        "busy_timeout",
        "p95 ms",
        "rows/s",
    ]);
    for r in &m.rows {
        let cls = |c: LockClass| {
            r.failed
                .get(c.as_str())
                .map(|s| s.show(0))
                .unwrap_or_else(|| "0".to_string())
        };
        let right = |s: String| Cell::new(s).set_alignment(CellAlignment::Right);
        t.add_row(vec![
            Cell::new(&r.preset),
            Cell::new(&r.process),
            right(r.ok.show(0)),
            right(r.gave_up.show(0)),
            right(cls(SHOWN[0])),
            right(cls(SHOWN[1])),
            right(cls(SHOWN[2])),
            right(r.p95_ms.show(1)),
            right(r.rows_per_s.show(0)),
        ]);
    }
    t
}

pub fn markdown(m: &Matrix) -> String {
    let mut out = format!(
        "# locklab matrix\n\n{} preset(s), {} repeat(s) each; cells are the median (min–max).\n\n",
        m.presets.len(),
        m.repeat
    );
    out.push_str("| preset | process | ok | gave_up | busy_upgrade | busy_snapshot | busy_timeout | p95 ms | rows/s |\n");
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in &m.rows {
        let cls = |c: LockClass| {
            r.failed
                .get(c.as_str())
                .map(|s| s.show(0))
                .unwrap_or_else(|| "0".to_string())
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.preset,
            r.process,
            r.ok.show(0),
            r.gave_up.show(0),
            cls(SHOWN[0]),
            cls(SHOWN[1]),
            cls(SHOWN[2]),
            r.p95_ms.show(1),
            r.rows_per_s.show(0)
        );
    }
    out.push_str("\n![failures per process per preset](matrix.svg)\n");
    out
}

/// A grouped bar chart: per preset, one bar per process, stacked by class.
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
    let total = |r: &MatrixRow| r.failed.values().map(|s| s.median).sum::<f64>();
    let max = m.rows.iter().map(total).fold(1.0_f64, f64::max);
    let bar_w = 22.0;
    let group_w = bar_w * processes.len().max(1) as f64 + 30.0;
    let (left, top, plot_h) = (60.0, 40.0, 300.0);
    let width = left + group_w * m.presets.len().max(1) as f64 + 180.0;
    let height = top + plot_h + 90.0;
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
            Text::new("failed attempts per process per preset (median of repeats)")
                .set("x", 10)
                .set("y", 20)
                .set("font-size", 14),
        );
    let shades = ["#1f77b4", "#2ca02c", "#8c564b", "#17becf", "#bcbd22"];
    for (gi, preset) in m.presets.iter().enumerate() {
        let gx = left + gi as f64 * group_w;
        for (pi, process) in processes.iter().enumerate() {
            let Some(row) = m
                .rows
                .iter()
                .find(|r| &r.preset == preset && &r.process == process)
            else {
                continue;
            };
            let x = gx + pi as f64 * bar_w;
            let mut y = top + plot_h;
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
                        .set("width", bar_w - 4.0)
                        .set("height", h)
                        .set("fill", color)
                        .add(Title::new(format!(
                            "{preset} · {process}: {:.0} {class}",
                            s.median
                        ))),
                );
            }
            doc = doc.add(
                Rectangle::new()
                    .set("x", x)
                    .set("y", top + plot_h + 2.0)
                    .set("width", bar_w - 4.0)
                    .set("height", 5)
                    .set("fill", shades[pi % shades.len()])
                    .add(Title::new(process.clone())),
            );
        }
        doc = doc.add(
            Text::new(preset.clone())
                .set("x", gx)
                .set("y", top + plot_h + 22.0)
                .set(
                    "transform",
                    format!("rotate(20 {gx} {})", top + plot_h + 22.0),
                ),
        );
    }
    let lx = left + group_w * m.presets.len().max(1) as f64 + 10.0;
    for (i, process) in processes.iter().enumerate() {
        let y = top + 15.0 * i as f64;
        doc = doc
            .add(
                Rectangle::new()
                    .set("x", lx)
                    .set("y", y)
                    .set("width", 10)
                    .set("height", 5)
                    .set("fill", shades[i % shades.len()]),
            )
            .add(
                Text::new(process.clone())
                    .set("x", lx + 14.0)
                    .set("y", y + 6.0),
            );
    }
    for (i, class) in SHOWN.iter().chain([LockClass::Other].iter()).enumerate() {
        let y = top + 15.0 * (processes.len() + 1 + i) as f64;
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
    doc.add(
        Text::new(format!("{max:.0}"))
            .set("x", 10)
            .set("y", top + 4.0),
    )
    .add(Text::new("0").set("x", 10).set("y", top + plot_h))
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
