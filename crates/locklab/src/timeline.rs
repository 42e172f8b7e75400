//! `locklab timeline`: an SVG from the lock traces. One lane per process; the
//! spans in which it held the write lock (solid) and waited for it (pale); each
//! failure marked with its class. A reader sees who held the lock when another
//! process failed.
//!
//! The svg crate builds the document. Each pixel column is shaded by the share
//! of its time spent holding (or waiting for) the lock, so a 15,000-event build
//! stays a few thousand shapes and interleaved holds are not drawn as overlaps.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use schema::error::LockClass;
use schema::trace::{read_trace, TraceEvent};
use svg::node::element::{Circle, Line, Rectangle, Text, Title};
use svg::Document;

const WIDTH: f64 = 1400.0;
const LEFT: f64 = 150.0;
const LANE: f64 = 44.0;
const TOP: f64 = 50.0;

pub fn class_color(class: LockClass) -> &'static str {
    match class {
        LockClass::BusyUpgrade => "#d62728",
        LockClass::BusySnapshot => "#9467bd",
        LockClass::BusyTimeout => "#ff7f0e",
        LockClass::Locked => "#8c564b",
        LockClass::Constraint => "#e377c2",
        _ => "#7f7f7f",
    }
}

/// Microseconds of each pixel column covered by the spans.
fn coverage(
    spans: impl Iterator<Item = (i64, i64)>,
    t0: i64,
    px_us: i64,
    columns: usize,
) -> Vec<i64> {
    let px_us = px_us.max(1);
    let mut cov = vec![0i64; columns];
    for (a, b) in spans.filter(|(a, b)| b > a) {
        let (a, b) = (a - t0, b - t0);
        let first = usize::try_from(a / px_us).unwrap_or(0);
        let last = usize::try_from((b - 1) / px_us)
            .unwrap_or(0)
            .min(columns.saturating_sub(1));
        for (col, slot) in cov.iter_mut().enumerate().take(last + 1).skip(first) {
            let lo = (col as i64 * px_us).max(a);
            let hi = ((col as i64 + 1) * px_us).min(b);
            *slot += (hi - lo).max(0);
        }
    }
    cov
}

/// Draws runs of columns with the same share (in tenths) as one rectangle
/// whose opacity is the share.
fn shade(mut doc: Document, cov: &[i64], y: f64, h: f64, color: &str, px_us: i64) -> Document {
    let level = |c: i64| {
        ((c as f64 / px_us.max(1) as f64) * 10.0)
            .ceil()
            .clamp(0.0, 10.0) as u8
    };
    let mut col = 0;
    while col < cov.len() {
        let l = level(cov[col]);
        let start = col;
        while col < cov.len() && level(cov[col]) == l {
            col += 1;
        }
        if l > 0 {
            doc = doc.add(
                Rectangle::new()
                    .set("x", LEFT + start as f64)
                    .set("y", y)
                    .set("width", (col - start) as f64)
                    .set("height", h)
                    .set("fill", color)
                    .set("fill-opacity", f64::from(l) / 10.0),
            );
        }
    }
    doc
}

/// A lane of write-lock holds as the OS saw them (`locklab who`): drawn under
/// the lane of its lab process, or as a row of its own for a foreign holder.
#[derive(Debug, Clone, PartialEq)]
pub struct OsLane {
    pub label: String,
    /// The lab process whose trace lane it belongs under; None for a foreign
    /// holder.
    pub process: Option<String>,
    /// The tooltip.
    pub title: String,
    /// Holds, wall-clock µs.
    pub spans: Vec<(i64, i64)>,
}

/// A row of the timeline: a process's own trace, or OS-observed holds.
enum Row<'a> {
    Trace(&'a str, &'a [&'a TraceEvent]),
    Os(&'a OsLane),
}

/// Builds the SVG from trace events of several processes.
pub fn render(events: &[TraceEvent], title: &str) -> Document {
    render_with_os(events, &[], title)
}

/// Builds the SVG from the traces and the OS-observed lanes: each daemon's
/// OS lane right under its own trace, then a row per foreign holder.
pub fn render_with_os(events: &[TraceEvent], os: &[OsLane], title: &str) -> Document {
    let mut lanes: BTreeMap<&str, Vec<&TraceEvent>> = BTreeMap::new();
    for e in events {
        lanes.entry(e.process.as_str()).or_default().push(e);
    }
    let mut rows: Vec<Row<'_>> = Vec::new();
    for (process, evs) in &lanes {
        rows.push(Row::Trace(process, evs));
        for l in os.iter().filter(|l| l.process.as_deref() == Some(*process)) {
            rows.push(Row::Os(l));
        }
    }
    for l in os
        .iter()
        .filter(|l| l.process.as_deref().is_none_or(|p| !lanes.contains_key(p)))
    {
        rows.push(Row::Os(l));
    }
    let os_spans = || os.iter().flat_map(|l| l.spans.iter().copied());
    let t0 = events
        .iter()
        .map(|e| e.wait_start_us)
        .chain(os_spans().map(|(a, _)| a))
        .min()
        .unwrap_or(0);
    let t1 = events
        .iter()
        .map(|e| e.end_us)
        .chain(os_spans().map(|(_, b)| b))
        .max()
        .unwrap_or(t0 + 1)
        .max(t0 + 1);
    let span_us = (t1 - t0) as f64;
    let plot = WIDTH - LEFT - 20.0;
    let x = |t: i64| LEFT + (t - t0) as f64 / span_us * plot;
    let px_us = (span_us / plot).ceil() as i64;
    let height = TOP + LANE * rows.len() as f64 + 70.0;
    let mut doc = Document::new()
        .set("viewBox", (0, 0, WIDTH, height))
        .set("width", WIDTH)
        .set("height", height)
        .set("font-family", "sans-serif")
        .set("font-size", 12)
        .add(
            Rectangle::new()
                .set("width", "100%")
                .set("height", "100%")
                .set("fill", "white"),
        )
        .add(
            Text::new(title)
                .set("x", 10)
                .set("y", 22)
                .set("font-size", 15),
        );
    let columns = plot.ceil() as usize + 1;
    for (i, row) in rows.iter().enumerate() {
        let y = TOP + LANE * i as f64;
        let (process, evs) = match row {
            Row::Os(l) => {
                doc = os_lane(doc, l, y, t0, px_us, columns);
                continue;
            }
            Row::Trace(p, evs) => (*p, *evs),
        };
        doc = doc.add(
            Text::new(process)
                .set("x", 10)
                .set("y", y + LANE / 2.0 + 4.0),
        );
        doc = doc.add(
            Line::new()
                .set("x1", LEFT)
                .set("x2", WIDTH - 20.0)
                .set("y1", y + LANE - 4.0)
                .set("y2", y + LANE - 4.0)
                .set("stroke", "#ddd"),
        );
        // Each pixel column is shaded by the share of its time the process
        // waited for (pale) or held (solid) the write lock: thousands of
        // millisecond holds of several processes interleave inside one pixel,
        // and a merged bar would show them holding it at once.
        let waits = coverage(
            evs.iter()
                .map(|e| (e.wait_start_us, e.acquired_us.unwrap_or(e.end_us))),
            t0,
            px_us,
            columns,
        );
        doc = shade(doc, &waits, y + 22.0, 8.0, "#6baed6", px_us);
        let held = coverage(
            evs.iter()
                .filter_map(|e| e.acquired_us.map(|a| (a, e.end_us.max(a)))),
            t0,
            px_us,
            columns,
        );
        doc = shade(doc, &held, y + 8.0, 14.0, "#1f77b4", px_us);
        // one marker per pixel and class, titled with its count
        let mut marks: BTreeMap<(i64, LockClass), (i64, usize)> = BTreeMap::new();
        for e in evs.iter().filter(|e| e.outcome == "failed") {
            let class = e.class.unwrap_or(LockClass::Other);
            let slot = (e.end_us - t0) / px_us.max(1);
            marks.entry((slot, class)).or_insert((e.end_us, 0)).1 += 1;
        }
        for ((_, class), (at, n)) in marks {
            doc = doc.add(
                Circle::new()
                    .set("cx", x(at))
                    .set("cy", y + 36.0)
                    .set("r", 3.5)
                    .set("fill", class_color(class))
                    .add(Title::new(format!("{process}: {n} {class}"))),
            );
        }
    }
    let legend_y = TOP + LANE * rows.len() as f64 + 25.0;
    let mut lx = LEFT;
    let mut legend = vec![
        ("write lock held", "#1f77b4"),
        ("waiting for it", "#6baed6"),
    ];
    if !os.is_empty() {
        legend.push(("held, OS-observed", OS_COLOR));
        if os.iter().any(|l| l.process.is_none()) {
            legend.push(("held by a foreign process", FOREIGN_COLOR));
        }
    }
    for (label, color) in legend {
        doc = doc
            .add(
                Rectangle::new()
                    .set("x", lx)
                    .set("y", legend_y - 10.0)
                    .set("width", 14)
                    .set("height", 10)
                    .set("fill", color),
            )
            .add(Text::new(label).set("x", lx + 18.0).set("y", legend_y));
        lx += 140.0 + if label.len() > 16 { 40.0 } else { 0.0 };
    }
    for class in [
        LockClass::BusyUpgrade,
        LockClass::BusySnapshot,
        LockClass::BusyTimeout,
        LockClass::Other,
    ] {
        doc = doc
            .add(
                Circle::new()
                    .set("cx", lx + 5.0)
                    .set("cy", legend_y - 4.0)
                    .set("r", 4)
                    .set("fill", class_color(class)),
            )
            .add(
                Text::new(class.as_str())
                    .set("x", lx + 14.0)
                    .set("y", legend_y),
            );
        lx += 120.0;
    }
    doc.add(
        Text::new(format!("{:.1} s", span_us / 1e6))
            .set("x", WIDTH - 20.0)
            .set("y", legend_y + 25.0)
            .set("text-anchor", "end"),
    )
}

const OS_COLOR: &str = "#2ca02c";
const FOREIGN_COLOR: &str = "#e6550d";

/// One OS-observed lane: the share of each pixel column held.
fn os_lane(mut doc: Document, l: &OsLane, y: f64, t0: i64, px_us: i64, columns: usize) -> Document {
    let color = if l.process.is_some() {
        OS_COLOR
    } else {
        FOREIGN_COLOR
    };
    doc = doc.add(
        Text::new(l.label.as_str())
            .set("x", 10)
            .set("y", y + LANE / 2.0 + 4.0)
            .set("fill", color)
            .add(Title::new(l.title.as_str())),
    );
    doc = doc.add(
        Line::new()
            .set("x1", LEFT)
            .set("x2", WIDTH - 20.0)
            .set("y1", y + LANE - 4.0)
            .set("y2", y + LANE - 4.0)
            .set("stroke", "#ddd"),
    );
    let held = coverage(l.spans.iter().copied(), t0, px_us, columns);
    shade(doc, &held, y + 8.0, 14.0, color, px_us)
}

/// Reads every trace file and writes the SVG.
pub fn write(traces: &[std::path::PathBuf], out: &Path, title: &str) -> anyhow::Result<usize> {
    write_with_os(traces, &[], out, title)
}

/// Reads every trace file and writes the SVG with the OS-observed lanes.
pub fn write_with_os(
    traces: &[std::path::PathBuf],
    os: &[OsLane],
    out: &Path,
    title: &str,
) -> anyhow::Result<usize> {
    let mut events = Vec::new();
    for t in traces {
        events.extend(read_trace(t).with_context(|| format!("reading the trace {}", t.display()))?);
    }
    let doc = render_with_os(&events, os, title);
    svg::save(out, &doc).with_context(|| format!("writing {}", out.display()))?;
    Ok(events.len())
}
