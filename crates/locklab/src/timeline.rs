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
    render_with_os(events, &[], title, None, &[])
}

/// Colours: held and waiting are told apart at a glance.
const HELD_COLOR: &str = "#1f77b4";
const WAIT_COLOR: &str = "#a3a3a3";
const LOAD_END_COLOR: &str = "#d62728";
/// A daemon's death: dark red, distinct from the load's end.
const DEATH_COLOR: &str = "#8b0000";

/// A step for the time axis: 1, 2, 5 × 10^n seconds, about 10 ticks.
fn tick_step(span_s: f64) -> f64 {
    let raw = (span_s / 10.0).max(1e-3);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

/// A daemon's death during a run, marked on its lane.
#[derive(Debug, Clone, PartialEq)]
pub struct Death {
    pub process: String,
    pub at_us: i64,
    /// What the mark says: "killed (signal 9), restarted".
    pub label: String,
}

/// The deaths a run's report lists.
pub fn deaths_of(r: &crate::report::Report) -> Vec<Death> {
    r.processes
        .iter()
        .flat_map(|p| {
            p.exits.iter().map(|e| Death {
                process: p.name.clone(),
                at_us: e.at_us,
                label: format!(
                    "{}{}",
                    match (e.signal, e.code) {
                        (Some(sig), _) => format!("killed (signal {sig})"),
                        (None, Some(c)) => format!("exited ({c})"),
                        _ => "ended".to_string(),
                    },
                    if e.restarted { ", restarted" } else { "" }
                ),
            })
        })
        .collect()
}

/// Builds the SVG from the traces and the OS-observed lanes: each daemon's
/// OS lane right under its own trace, then a row per foreign holder. Each
/// death is a red line across its daemon's lane.
pub fn render_with_os(
    events: &[TraceEvent],
    os: &[OsLane],
    title: &str,
    load_end_us: Option<i64>,
    deaths: &[Death],
) -> Document {
    let holds = crate::holders::Holds::new(events);
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
    let height = TOP + LANE * rows.len() as f64 + 110.0;
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
        doc = shade(doc, &waits, y + 22.0, 8.0, WAIT_COLOR, px_us);
        let held = coverage(
            evs.iter()
                .filter_map(|e| e.acquired_us.map(|a| (a, e.end_us.max(a)))),
            t0,
            px_us,
            columns,
        );
        doc = shade(doc, &held, y + 8.0, 14.0, HELD_COLOR, px_us);
        // one marker per pixel and class, titled with its count and who held
        // the write lock at those failures (from the traces)
        type Mark = (i64, usize, BTreeMap<String, usize>, String);
        let mut marks: BTreeMap<(i64, LockClass), Mark> = BTreeMap::new();
        for e in evs.iter().filter(|e| e.outcome == "failed") {
            let class = e.class.unwrap_or(LockClass::Other);
            let slot = (e.end_us - t0) / px_us.max(1);
            let m =
                marks
                    .entry((slot, class))
                    .or_insert((e.end_us, 0, BTreeMap::new(), e.op.clone()));
            m.1 += 1;
            let holder = holds
                .holder_of(e)
                .unwrap_or_else(|| "no traced process".to_string());
            *m.2.entry(holder).or_default() += 1;
        }
        for ((_, class), (at, n, by, op)) in marks {
            let held: Vec<String> = by.iter().map(|(h, k)| format!("{h} ({k})")).collect();
            doc = doc.add(
                Circle::new()
                    .set("cx", x(at))
                    .set("cy", y + 36.0)
                    .set("r", 3.5)
                    .set("fill", class_color(class))
                    .add(Title::new(format!(
                        "{process}: {n} {class} in {op} at {:.2} s; the write lock was held by {}",
                        (at - t0) as f64 / 1e6,
                        held.join(", ")
                    ))),
            );
        }
    }
    // The time axis, in seconds from the first traced moment.
    let axis_y = TOP + LANE * rows.len() as f64 + 4.0;
    doc = doc.add(
        Line::new()
            .set("x1", LEFT)
            .set("x2", WIDTH - 20.0)
            .set("y1", axis_y)
            .set("y2", axis_y)
            .set("stroke", "#555"),
    );
    let step = tick_step(span_us / 1e6);
    let mut t = 0.0;
    while t <= span_us / 1e6 + 1e-9 {
        let tx = LEFT + t * 1e6 / span_us * plot;
        doc = doc
            .add(
                Line::new()
                    .set("x1", tx)
                    .set("x2", tx)
                    .set("y1", axis_y)
                    .set("y2", axis_y + 5.0)
                    .set("stroke", "#555"),
            )
            .add(
                Text::new(if step < 1.0 {
                    format!("{t:.1}")
                } else {
                    format!("{t:.0}")
                })
                .set("x", tx)
                .set("y", axis_y + 17.0)
                .set("text-anchor", "middle"),
            );
        t += step;
    }
    doc = doc.add(
        Text::new("time (s)")
            .set("x", LEFT - 16.0)
            .set("y", axis_y + 17.0)
            .set("text-anchor", "end"),
    );
    // Where the load ended and the drain began.
    for d in deaths.iter().filter(|d| (t0..=t1).contains(&d.at_us)) {
        let Some(i) = rows
            .iter()
            .position(|r| matches!(r, Row::Trace(p, _) if *p == d.process))
        else {
            continue;
        };
        let y = TOP + LANE * i as f64;
        doc = doc
            .add(
                Line::new()
                    .set("x1", x(d.at_us))
                    .set("x2", x(d.at_us))
                    .set("y1", y)
                    .set("y2", y + LANE)
                    .set("stroke", DEATH_COLOR)
                    .set("stroke-width", 2),
            )
            .add(
                Text::new(format!("✕ {}", d.label))
                    .set("x", x(d.at_us) + 3.0)
                    .set("y", y + 10.0)
                    .set("font-size", 10)
                    .set("fill", DEATH_COLOR),
            );
    }
    if let Some(end) = load_end_us.filter(|e| (t0..=t1).contains(e)) {
        doc = doc
            .add(
                Line::new()
                    .set("x1", x(end))
                    .set("x2", x(end))
                    .set("y1", TOP - 8.0)
                    .set("y2", axis_y)
                    .set("stroke", LOAD_END_COLOR)
                    .set("stroke-dasharray", "4 3"),
            )
            .add({
                // Keep the label inside the picture: left of the line near
                // the right edge.
                let right = x(end) > WIDTH - 200.0;
                Text::new("load ends, drain begins")
                    .set("x", if right { x(end) - 4.0 } else { x(end) + 4.0 })
                    .set("y", TOP - 10.0)
                    .set("text-anchor", if right { "end" } else { "start" })
                    .set("fill", LOAD_END_COLOR)
            });
    }
    let legend_y = axis_y + 45.0;
    let mut lx = LEFT;
    let mut legend = vec![
        ("write lock held", HELD_COLOR),
        ("waiting for it", WAIT_COLOR),
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
        Text::new(format!(
            "Shading: the darker a pixel column, the larger the share of its {:.1} ms spent in that state. \
             Hover a dot for its failures and who held the lock.",
            px_us as f64 / 1000.0
        ))
        .set("x", LEFT)
        .set("y", legend_y + 25.0),
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
    write_with_os(traces, &[], out, title, None, &[])
}

/// Reads every trace file and writes the SVG with the OS-observed lanes.
pub fn write_with_os(
    traces: &[std::path::PathBuf],
    os: &[OsLane],
    out: &Path,
    title: &str,
    load_end_us: Option<i64>,
    deaths: &[Death],
) -> anyhow::Result<usize> {
    let mut events = Vec::new();
    for t in traces {
        events.extend(read_trace(t).with_context(|| format!("reading the trace {}", t.display()))?);
    }
    let doc = render_with_os(&events, os, title, load_end_us, deaths);
    svg::save(out, &doc).with_context(|| format!("writing {}", out.display()))?;
    Ok(events.len())
}
