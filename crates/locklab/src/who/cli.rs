//! The `locklab who FILE` command: live lines while it samples, then a table
//! per holder (or the report as JSON).
//!
//! Output: without `--json`, the live lines and the final table go to stdout.
//! With `--json`, stdout carries exactly one JSON document at the end (the
//! [`WhoReport`], holds included) and the live lines go to stderr.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use clap::Args;
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, CellAlignment, ContentArrangement, Table};
use schema::settings::parse_duration;

use super::procinfo::shorten;
use super::sampler::{LiveEvent, Party, Sampler, SamplerOptions, WhoReport};
use super::watch::ProbeMode;

#[derive(Debug, Args)]
pub struct WhoArgs {
    /// The SQLite database file to watch: the path your application opens
    /// (Django: DATABASES['default']['NAME']).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Time between two samples of the locks (e.g. 1ms, 500us, 10ms; default
    /// 1ms). Holds shorter than this are counted, not timed.
    #[arg(long, env = "LAB_WHO_INTERVAL", value_name = "DURATION")]
    pub interval: Option<String>,
    /// How to sample: getlk (default: fcntl F_GETLK on the file and its -shm;
    /// sees the writer, costs the other processes nothing) or proc (also
    /// /proc/locks: readers and blocked waiters too, but each read takes the
    /// kernel's global file-lock semaphore, stalling every fcntl lock call on
    /// the machine for that moment).
    #[arg(long, env = "LAB_WHO_PROBE", value_name = "getlk|proc")]
    pub probe: Option<String>,
    /// Stop after this long (default: sample until Ctrl-C).
    #[arg(long, env = "LAB_WHO_DURATION", value_name = "DURATION")]
    pub duration: Option<String>,
    /// Print the final result as one JSON document on stdout (the live lines
    /// then go to stderr).
    #[arg(long)]
    pub json: bool,
    /// No live lines: only the final table (or JSON).
    #[arg(long)]
    pub quiet: bool,
}

/// A duration for people: `0.4 ms`, `12.3 ms`, `8.01 s`.
pub fn fmt_secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

fn who(p: &Party) -> String {
    let mut s = match p.mode {
        Some(m) => format!("pid {} {} {m}", p.pid, p.name),
        None => format!("pid {} {}", p.pid, p.name),
    };
    if let Some(c) = &p.command {
        s.push_str(&format!(" [{c}]"));
    }
    s
}

/// One live line, `t0_us` being the start of sampling.
pub fn live_line(e: &LiveEvent, t0_us: i64) -> String {
    let rel = |at: i64| format!("+{:>10.6}s", (at - t0_us) as f64 / 1e6);
    match e {
        LiveEvent::Started {
            file,
            wal_index,
            source,
            ..
        } => format!(
            "locklab who: watching {file} ({}) through {source}; Ctrl-C to stop",
            if *wal_index {
                "WAL mode: its -shm exists"
            } else {
                "no -shm: rollback journal, or WAL not opened yet"
            }
        ),
        LiveEvent::Change {
            at_us,
            holders,
            ended,
            ended_names,
            waiting,
            readers,
        } => {
            let now = if holders.is_empty() {
                "free".to_string()
            } else {
                holders.iter().map(who).collect::<Vec<_>>().join(", ")
            };
            let mut line = format!("{}  write lock: {now}", rel(*at_us));
            if !ended.is_empty() {
                let was: Vec<String> = ended
                    .iter()
                    .zip(ended_names)
                    .map(|(h, name)| {
                        let how_long = if h.timed() {
                            format!("for {}", fmt_secs(h.held_us() as f64 / 1e6))
                        } else {
                            "seen once (not timed)".to_string()
                        };
                        format!("pid {} {name} {} {how_long}", h.pid, h.modes())
                    })
                    .collect();
                line.push_str(&format!("  · before: {}", was.join(", ")));
            }
            if !waiting.is_empty() {
                let w: Vec<String> = waiting.iter().map(who).collect();
                line.push_str(&format!("  · blocked: {}", w.join(", ")));
            }
            if *readers > 0 {
                line.push_str(&format!("  · readers: {readers}"));
            }
            line
        }
        LiveEvent::Notice { at_us, message } => format!("{}  note: {message}", rel(*at_us)),
    }
}

/// The table per holder.
pub fn holders_table(r: &WhoReport) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(vec![
            "pid",
            "name",
            "holds",
            "untimed",
            "total",
            "longest",
            "share",
            "modes",
            "command line",
            "container",
        ]);
    let right = |s: String| Cell::new(s).set_alignment(CellAlignment::Right);
    for h in &r.holders {
        let modes: Vec<String> = h.modes.iter().map(|(m, n)| format!("{m} {n}")).collect();
        t.add_row(vec![
            right(h.pid.to_string()),
            Cell::new(match &h.process {
                Some(p) if *p != h.name => format!("{} ({p})", h.name),
                _ => h.name.clone(),
            }),
            right(h.count.to_string()),
            right(h.untimed.to_string()),
            right(fmt_secs(h.total_s)),
            right(if h.count == h.untimed {
                "-".to_string()
            } else {
                fmt_secs(h.longest_s)
            }),
            right(format!("{:.1}%", h.share * 100.0)),
            Cell::new(modes.join(", ")),
            Cell::new(shorten(&h.cmdline, 60)),
            Cell::new(h.container.clone().unwrap_or_default()),
        ]);
    }
    t
}

/// The closing text: the table, the sampling figures, the resolution and the
/// warnings.
pub fn render(r: &WhoReport) -> String {
    let mut out = String::new();
    if r.holders.is_empty() {
        out.push_str(&format!(
            "nobody held the write lock on {} while sampling ({}). If your application still says \
             `database is locked`, sample for longer, and check that this is the file it opens.\n",
            r.file,
            fmt_secs(r.sampled_s)
        ));
    } else {
        out.push_str(&format!("who held the write lock on {}:\n", r.file));
        out.push_str(&holders_table(r).to_string());
        out.push('\n');
    }
    out.push_str(&format!(
        "sampled {} through {}: {} samples ({:.0}/s), sampler CPU {:.1}% of one core\n",
        fmt_secs(r.sampled_s),
        r.source,
        r.samples,
        r.samples_per_s,
        r.cpu_share * 100.0
    ));
    out.push_str(&format!("resolution: {}\n", r.resolution));
    for w in &r.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    out
}

/// Runs `locklab who`.
pub fn run(a: &WhoArgs, interrupted: &AtomicBool) -> anyhow::Result<ExitCode> {
    // an empty variable counts as unset, as everywhere in locklab
    fn set(v: &Option<String>) -> Option<&str> {
        v.as_deref().map(str::trim).filter(|v| !v.is_empty())
    }
    let interval = parse_duration(set(&a.interval).unwrap_or("1ms"))
        .map_err(|m| anyhow::anyhow!("--interval: {m}"))?;
    let duration = set(&a.duration)
        .map(parse_duration)
        .transpose()
        .map_err(|m| anyhow::anyhow!("--duration: {m}"))?;
    let probe = ProbeMode::parse(set(&a.probe).unwrap_or("getlk"))
        .map_err(|m| anyhow::anyhow!("--probe: {m}"))?;
    let (tx, rx) = mpsc::channel();
    let sampler = Sampler::start(
        &a.file,
        SamplerOptions {
            interval,
            probe,
            live: (!a.quiet).then_some(tx),
        },
    )?;
    let started = Instant::now();
    let mut t0_us = schema::types::now_micros();
    let mut live: Box<dyn Write> = if a.json {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    let mut show = |e: LiveEvent, live: &mut Box<dyn Write>| {
        if let LiveEvent::Started { at_us, .. } = &e {
            t0_us = *at_us;
        }
        let _ = writeln!(live, "{}", live_line(&e, t0_us));
    };
    loop {
        if interrupted.load(Ordering::SeqCst) || duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        let wait = duration
            .map(|d| d.saturating_sub(started.elapsed()))
            .unwrap_or(Duration::MAX)
            .min(Duration::from_millis(100));
        match rx.recv_timeout(wait) {
            Ok(e) => show(e, &mut live),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(wait),
        }
    }
    let report = sampler.stop()?;
    while let Ok(e) = rx.try_recv() {
        show(e, &mut live);
    }
    let _ = live.flush();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(ExitCode::SUCCESS)
}
