//! `locklab bench`: how close the cure runs to what the machine itself
//! allows. Everything is measured in one run, on one file system, and every
//! figure is a ratio to the single-writer ceiling measured in that same run
//! (this machine's disk speed varies several times from run to run, so only
//! ratios compare).
//!
//! 1. The ceiling: one connection, alone, inserting the lab's own rows
//!    (build events, with the robust preset's pragmas) one per transaction,
//!    then 100 and 1000 per transaction.
//! 2. The robust preset under the default load, without the `who` sampler:
//!    committed rows/s per process and in total, webui's HTTP p50/p99 (from
//!    the loadgen's log), CPU seconds and peak RSS per daemon.
//! 3. The ingester alone: three builds of 15,000 events, unpaced, one after
//!    the other; the fastest, take to finish (the ceiling too is the best of
//!    three).
//! 4. webui alone (no scheduler, no ingester) under the same HTTP load:
//!    p50/p99 and rows/s.
//!
//! Lock failures (gave up, busy_upgrade, busy_snapshot) are counted over
//! every part; busy_timeouts that were retried are reported, not counted (a
//! slow disk makes them, not the design).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use diesel::Connection;
use schema::db::{DbTarget, LabConn};
use schema::models::{Build, BuildEvent};
use schema::stats::ProcessReport;
use serde::{Deserialize, Serialize};

use crate::report::EnvironmentInfo;
use crate::run::RunOptions;

/// Rows per second of one connection alone.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ceiling {
    pub per_txn: f64,
    pub batch_100: f64,
    pub batch_1000: f64,
    /// Rows inserted for each figure.
    pub rows: Rows,
    /// The WAL checkpointing the ceiling ran with: the preset's (added
    /// field). Under `background` a checkpointer thread beside the writer
    /// copies the WAL on the other core, which raises the ceiling too.
    #[serde(default)]
    pub checkpoint: String,
}

impl Ceiling {
    /// The batched ceiling every ratio is to: the better of the two batches.
    pub fn batched(&self) -> f64 {
        self.batch_100.max(self.batch_1000)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Rows {
    pub per_txn: u64,
    pub batch: u64,
}

/// A rate with its ratio to the batched ceiling ([`Ceiling::batched`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Rate {
    pub rows_per_s: f64,
    pub ratio_to_ceiling: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BenchProcess {
    pub name: String,
    pub rows_per_s: f64,
    pub ratio_to_ceiling: f64,
    /// CPU seconds (user + system) over the run, and their share of the
    /// load's wall time (1.0 = one core busy).
    pub cpu_s: Option<f64>,
    pub cpu_share: Option<f64>,
    pub peak_rss_mib: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Robust {
    pub load_s: f64,
    pub processes: Vec<BenchProcess>,
    pub total: Rate,
    pub webui_p50_ms: f64,
    pub webui_p99_ms: f64,
    /// CPU seconds of the loadgen's HTTP client threads over the load, and
    /// their share of the load's wall time: the load must not be the
    /// bottleneck.
    pub loadgen_cpu_s: Option<f64>,
    pub loadgen_cpu_share: Option<f64>,
    /// CPU seconds of the whole `locklab` process over the run: the clients,
    /// the supervision and the drain, and also the check and the report
    /// after the load (so its share of the load's time overstates what ran
    /// during the load).
    #[serde(default)]
    pub locklab_cpu_s: Option<f64>,
    /// The report of the run (in DIR/robust/).
    pub out: PathBuf,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IngesterAlone {
    /// Events of one build.
    pub events: u64,
    /// The builds ingested, one after the other (added field; 1 in
    /// bench.json files written before it).
    #[serde(default = "one")]
    pub builds: u32,
    /// The fastest build, from its claim (by runbuilds) to its completion:
    /// for a build after the first, this includes its wait behind the ones
    /// before it (runbuilds claims them together).
    pub wall_s: f64,
    /// The fastest build's own time (added field): from the ingester's
    /// `take` of the build to its `finish`, from its trace. `wall_s` also
    /// holds the time until an idle ingester looks for work again (it polls
    /// every 200 ms), which is the lab's, not the ingester's. `rate` and
    /// `time_ratio` are of this.
    #[serde(default)]
    pub ingest_s: f64,
    /// Every build's take-to-finish time, in order (added field).
    #[serde(default)]
    pub ingest_s_each: Vec<f64>,
    pub rate: Rate,
    /// How long the ceiling's batched writer takes for as many rows.
    pub ceiling_s: f64,
    /// `ingest_s / ceiling_s` (the target is at most 2).
    pub time_ratio: f64,
    pub peak_rss_mib: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WebuiAlone {
    pub load_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub rate: Rate,
}

/// bench.json.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Bench {
    pub quick: bool,
    pub machine: EnvironmentInfo,
    pub ceiling: Ceiling,
    pub robust: Robust,
    pub ingester_alone: IngesterAlone,
    pub webui_alone: WebuiAlone,
    /// webui's p99 under the full robust load over its p99 alone (the target
    /// is at most 5).
    pub webui_p99_ratio: f64,
    /// gave_up + busy_upgrade + busy_snapshot over every part.
    pub lock_failures: u64,
    /// busy_timeouts over every part (retried under robust; reported only).
    pub busy_timeouts: u64,
    /// The `who` sampler does not run during the bench.
    pub who_sampler: String,
}

/// What the bench runs.
pub struct BenchOptions {
    pub out: PathBuf,
    pub quick: bool,
    /// The robust preset's run, resolved as `locklab run` would.
    pub run: RunOptions,
    pub knobs: schema::settings::Knobs,
}

fn ratio(v: f64, ceiling: f64) -> f64 {
    if ceiling > 0.0 {
        v / ceiling
    } else {
        0.0
    }
}

/// The ceiling: one connection alone on a fresh file.
fn ceiling(dir: &Path, knobs: &schema::settings::Knobs, quick: bool) -> anyhow::Result<Ceiling> {
    let db = dir.join("ceiling.sqlite3");
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let target = DbTarget::Sqlite(db);
    schema::migrate::migrate(&target, knobs.journal_mode.value, &[])
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let policy = knobs.policy();
    // The same checkpointing as the preset's daemons: under `background` a
    // checkpointer thread beside the writer, as each daemon runs one.
    let stop = policy.stop.clone();
    let checkpointer = schema::db::start_checkpointer("ceiling", &target, &policy)
        .context("starting the ceiling's checkpointer")?;
    let mut conn =
        LabConn::open(&target, Arc::new(policy), false).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rows = Rows {
        per_txn: if quick { 500 } else { 3_000 },
        batch: if quick { 10_000 } else { 60_000 },
    };
    // The best of three tries each: the disk's speed varies from second to
    // second, and a ceiling is what the machine can do.
    let mut rate = |n: u64, per: usize| -> anyhow::Result<f64> {
        let mut best: f64 = 0.0;
        for _ in 0..3 {
            let c = conn.diesel();
            let build = Build::create_empty(c).context("creating the ceiling's build")?;
            let events: Vec<_> = schema::stream::Generator::new(7)
                .take(usize::try_from(n).unwrap_or(0))
                .collect();
            let t0 = Instant::now();
            for chunk in events.chunks(per) {
                c.transaction(|c| BuildEvent::insert(c, build, chunk))
                    .context("inserting the ceiling's rows")?;
            }
            best = best.max(n as f64 / t0.elapsed().as_secs_f64().max(1e-9));
        }
        Ok(best)
    };
    let ceiling = Ceiling {
        per_txn: rate(rows.per_txn, 1)?,
        batch_100: rate(rows.batch, 100)?,
        batch_1000: rate(rows.batch, 1000)?,
        rows,
        checkpoint: knobs.checkpoint.value.to_string(),
    };
    if let Some(thread) = checkpointer {
        stop.set();
        let _ = thread.join();
    }
    Ok(ceiling)
}

/// p50 and p99 of the 2xx latencies in a loadgen log.
fn http_percentiles(log: &Path) -> anyhow::Result<(f64, f64)> {
    let lines = crate::check::read_log(log)?;
    let mut ms: Vec<f64> = lines
        .iter()
        .filter(|l| l.status.is_some_and(|s| (200..300).contains(&s)))
        .map(|l| l.latency_ms)
        .collect();
    if ms.is_empty() {
        bail!(
            "{}: no successful request to take percentiles of",
            log.display()
        );
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    Ok((at(0.5), at(0.99)))
}

fn lock_failures(processes: &[ProcessReport]) -> (u64, u64) {
    let class = |p: &ProcessReport, c: &str| p.failed.get(c).copied().unwrap_or(0);
    let failures = processes
        .iter()
        .map(|p| p.gave_up + class(p, "busy_upgrade") + class(p, "busy_snapshot"))
        .sum();
    let timeouts = processes.iter().map(|p| class(p, "busy_timeout")).sum();
    (failures, timeouts)
}

/// webui alone on a fresh file, under the run's HTTP load.
fn webui_alone(opts: &BenchOptions, dir: &Path) -> anyhow::Result<(WebuiAlone, ProcessReport)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let db = dir.join("locklab.sqlite3");
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let target = DbTarget::Sqlite(db.clone());
    schema::migrate::migrate_with(
        &target,
        opts.run.journal_mode,
        opts.run.mysql_engine,
        &opts.run.environments,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let bins = crate::run::daemon_binaries()?;
    let bin = bins
        .iter()
        .find(|(n, _)| n == "webui")
        .map(|(_, p)| p.clone())
        .context("no webui binary")?;
    let stats_out = dir.join("stats-webui.json");
    let mut args: Vec<std::ffi::OsString> = vec![
        "--database-url".into(),
        db.clone().into(),
        "--preset".into(),
        opts.run.preset.clone().into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--stats-out".into(),
        stats_out.clone().into(),
    ];
    for (flag, value) in &opts.run.knob_flags {
        args.push(flag.into());
        args.push(value.into());
    }
    let mut child = daemon::spawn::spawn(daemon::spawn::Spec {
        bin: &bin,
        name: "webui",
        args,
        env: Vec::new(),
        env_remove: Vec::new(),
        log: dir.join("webui.log"),
        append_log: false,
        startup_timeout: Duration::from_secs(30),
    })?;
    let agent = crate::http::agent(Duration::from_secs(2));
    crate::http::wait_healthy(
        &agent,
        &crate::http::join(&child.url, "/healthz"),
        Duration::from_secs(30),
    )?;
    let _ = crate::http::post_empty(&agent, &crate::http::join(&child.url, "/load-start"));
    let log = dir.join("loadgen.jsonl");
    let load = crate::loadgen::Load::start(&crate::loadgen::LoadSpec {
        target: child.url.clone(),
        clients: opts.run.clients,
        num: opts.run.num,
        sleep: opts.run.sleep,
        duration: opts.run.duration,
        request_timeout: opts.run.request_timeout,
        needs_mix: opts.run.needs_mix,
        project: "locklab-bench".to_string(),
        log: Some(log.clone()),
    })?;
    while load.started.elapsed() < opts.run.duration {
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, elapsed) = load.finish()?;
    let _ = crate::http::post_empty(&agent, &crate::http::join(&child.url, "/drain"));
    child.terminate(Duration::from_secs(30))?;
    let stats: ProcessReport = serde_json::from_str(
        &std::fs::read_to_string(&stats_out)
            .with_context(|| format!("reading {}", stats_out.display()))?,
    )
    .with_context(|| format!("parsing {}", stats_out.display()))?;
    let (p50, p99) = http_percentiles(&log)?;
    Ok((
        WebuiAlone {
            load_s: elapsed.as_secs_f64(),
            p50_ms: p50,
            p99_ms: p99,
            rate: Rate {
                rows_per_s: stats.rows_per_s,
                ratio_to_ceiling: 0.0,
            },
        },
        stats,
    ))
}

fn one() -> u32 {
    1
}

/// Builds of the ingester-alone part: as the ceiling, the best of three.
const INGESTER_BUILDS: u32 = 3;

/// The ingester alone: one request of three builds, unpaced, which the one
/// ingester takes one after the other; the run's drain waits for them.
fn ingester_alone(
    opts: &BenchOptions,
    dir: &Path,
    interrupted: &Arc<AtomicBool>,
) -> anyhow::Result<(IngesterAlone, Vec<ProcessReport>)> {
    let events = if opts.quick { 3_000 } else { 15_000 };
    let mut run = opts.run.clone();
    run.out = dir.to_path_buf();
    run.clients = 1;
    run.num = INGESTER_BUILDS;
    // One request, then the client sleeps past the load's end.
    run.sleep = Duration::from_secs(3600);
    run.duration = Duration::from_secs(2);
    run.events_per_build = events;
    run.event_delay = Some("0s".to_string());
    run.drain_timeout = Duration::from_secs(300);
    run.who = None;
    run.runbuilds = 1;
    let report = crate::run::run_lab(&run, interrupted)?;
    let mut conn = LabConn::open(
        &DbTarget::Sqlite(dir.join("locklab.sqlite3")),
        Arc::new(opts.knobs.policy()),
        false,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut builds: Vec<Build> = Build::all(conn.diesel())
        .context("reading the builds")?
        .into_iter()
        .filter(|b| b.completed_at.is_some())
        .collect();
    if builds.is_empty() {
        bail!(
            "the ingester-alone run finished no build (see {})",
            dir.display()
        );
    }
    // The one ingester finishes them in turn: the n-th take-to-finish span
    // of its trace is the n-th build to complete.
    builds.sort_by_key(|b| b.completed_at);
    let walls: Vec<f64> = builds
        .iter()
        .map(|b| (b.completed_at.unwrap_or(b.started_at) - b.started_at) as f64 / 1e6)
        .collect();
    let mut each = take_to_finish(&dir.join("trace-buildinfohelper.jsonl"));
    if each.len() != builds.len() {
        log::warn!(
            "the ingester's trace has {} take-to-finish spans for {} finished builds; \
             using claim to completion",
            each.len(),
            builds.len()
        );
        each = walls.clone();
    }
    let best = (0..each.len())
        .min_by(|&a, &b| each[a].total_cmp(&each[b]))
        .unwrap_or(0);
    let (wall_s, ingest_s) = (walls[best], each[best]);
    let ingested = u64::try_from(builds[best].events_ingested).unwrap_or(0);
    let peak = report
        .processes
        .iter()
        .find(|p| p.name == "buildinfohelper")
        .and_then(|p| p.peak_rss_mib);
    Ok((
        IngesterAlone {
            events: ingested,
            builds: u32::try_from(builds.len()).unwrap_or(u32::MAX),
            wall_s,
            ingest_s,
            ingest_s_each: each,
            rate: Rate {
                rows_per_s: ingested as f64 / ingest_s.max(1e-9),
                ratio_to_ceiling: 0.0,
            },
            ceiling_s: 0.0,
            time_ratio: 0.0,
            peak_rss_mib: peak,
        },
        report.processes,
    ))
}

/// Seconds from each committed `take` of the ingester to the committed
/// `finish` that follows it, read from its trace, in order.
fn take_to_finish(trace: &Path) -> Vec<f64> {
    let Ok(text) = std::fs::read_to_string(trace) else {
        return Vec::new();
    };
    let mut spans = Vec::new();
    let mut take = None;
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["outcome"] != "commit" {
            continue;
        }
        match v["op"].as_str() {
            Some("take") => take = v["wait_start_us"].as_i64(),
            Some("finish") => {
                if let (Some(t), Some(f)) = (take.take(), v["end_us"].as_i64()) {
                    if f > t {
                        spans.push((f - t) as f64 / 1e6);
                    }
                }
            }
            _ => {}
        }
    }
    spans
}

/// Runs every part and writes DIR/bench.json.
pub fn run(opts: &BenchOptions, interrupted: &Arc<AtomicBool>) -> anyhow::Result<Bench> {
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let step = |n: u32, what: &str| eprintln!("locklab bench: {n}/4 {what}");
    step(1, "the single-writer ceiling (one connection alone)");
    let ceiling = ceiling(&opts.out, &opts.knobs, opts.quick)?;
    // The batched ceiling: the better of 100 and 1000 rows per transaction.
    let top = ceiling.batched();
    eprintln!(
        "locklab bench: ceiling {:.0} rows/s per transaction, {:.0} batched by 100, {:.0} by 1000",
        ceiling.per_txn, ceiling.batch_100, ceiling.batch_1000
    );
    if interrupted.load(Ordering::SeqCst) {
        bail!("interrupted");
    }

    step(
        2,
        "the robust preset under the default load (no `who` sampler)",
    );
    let mut run = opts.run.clone();
    run.out = opts.out.join("robust");
    run.who = None;
    let before = schema::stats::own_usage().map(|u| u.0);
    let report = crate::run::run_lab(&run, interrupted)?;
    let locklab_cpu_s = match (before, schema::stats::own_usage().map(|u| u.0)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let loadgen_cpu_s = report.loadgen.cpu_s;
    let load_s = report.load_s;
    let processes: Vec<BenchProcess> = report
        .processes
        .iter()
        .map(|p| BenchProcess {
            name: p.name.clone(),
            rows_per_s: p.rows_per_s,
            ratio_to_ceiling: ratio(p.rows_per_s, top),
            cpu_s: p.cpu_s,
            cpu_share: p.cpu_s.map(|c| c / load_s.max(1e-9)),
            peak_rss_mib: p.peak_rss_mib,
        })
        .collect();
    let total: f64 = report.processes.iter().map(|p| p.rows_per_s).sum();
    let (p50, p99) = http_percentiles(&run.out.join("loadgen.jsonl"))?;
    let robust = Robust {
        load_s,
        processes,
        total: Rate {
            rows_per_s: total,
            ratio_to_ceiling: ratio(total, top),
        },
        webui_p50_ms: p50,
        webui_p99_ms: p99,
        loadgen_cpu_s,
        loadgen_cpu_share: loadgen_cpu_s.map(|c| c / load_s.max(1e-9)),
        locklab_cpu_s,
        out: run.out.clone(),
    };
    let (mut failures, mut timeouts) = lock_failures(&report.processes);
    if interrupted.load(Ordering::SeqCst) {
        bail!("interrupted");
    }

    step(
        3,
        "the ingester alone: three builds, unpaced, one after the other",
    );
    let (mut ingester, ingest_processes) =
        ingester_alone(opts, &opts.out.join("ingester"), interrupted)?;
    ingester.rate.ratio_to_ceiling = ratio(ingester.rate.rows_per_s, top);
    ingester.ceiling_s = ingester.events as f64 / top.max(1e-9);
    ingester.time_ratio = ratio(ingester.ingest_s, ingester.ceiling_s);
    let (f, t) = lock_failures(&ingest_processes);
    failures += f;
    timeouts += t;
    if interrupted.load(Ordering::SeqCst) {
        bail!("interrupted");
    }

    step(4, "webui alone under the same HTTP load");
    let (mut webui, webui_stats) = webui_alone(opts, &opts.out.join("webui"))?;
    webui.rate.ratio_to_ceiling = ratio(webui.rate.rows_per_s, top);
    let (f, t) = lock_failures(std::slice::from_ref(&webui_stats));
    failures += f;
    timeouts += t;

    let bench = Bench {
        quick: opts.quick,
        machine: crate::report::environment_info(&opts.out),
        webui_p99_ratio: ratio(robust.webui_p99_ms, webui.p99_ms),
        ceiling,
        robust,
        ingester_alone: ingester,
        webui_alone: webui,
        lock_failures: failures,
        busy_timeouts: timeouts,
        who_sampler: "off: the bench runs without `locklab who`, whose sampling costs CPU"
            .to_string(),
    };
    std::fs::write(
        opts.out.join("bench.json"),
        serde_json::to_vec_pretty(&bench).context("serialising bench.json")?,
    )
    .context("writing bench.json")?;
    Ok(bench)
}

/// The bench's table, for the terminal and the README.
pub fn table(b: &Bench) -> String {
    use std::fmt::Write as _;
    let pct = |r: f64| format!("{:.0}%", r * 100.0);
    let mut out = String::new();
    let m = &b.machine;
    let _ = writeln!(
        out,
        "machine: {} cores, {} file system, SQLite {}{} · checkpoints: {} (the ceiling's and the daemons')",
        m.cores,
        m.fs_type,
        m.sqlite_version,
        if b.quick { " · --quick" } else { "" },
        b.ceiling.checkpoint
    );
    let _ = writeln!(
        out,
        "| figure | value | ratio to the batched ceiling (the better of 100 and 1000 per transaction, best of 3) |"
    );
    let _ = writeln!(out, "|---|---:|---:|");
    let c = &b.ceiling;
    let top = c.batched();
    let _ = writeln!(
        out,
        "| ceiling, 1 row per transaction | {:.0} rows/s | {} |",
        c.per_txn,
        pct(ratio(c.per_txn, top))
    );
    let _ = writeln!(
        out,
        "| ceiling, 100 rows per transaction | {:.0} rows/s | {} |",
        c.batch_100,
        pct(ratio(c.batch_100, top))
    );
    let _ = writeln!(
        out,
        "| ceiling, 1000 rows per transaction | {:.0} rows/s | {} |",
        c.batch_1000,
        pct(ratio(c.batch_1000, top))
    );
    for p in &b.robust.processes {
        let _ = writeln!(
            out,
            "| robust: {} | {:.0} rows/s · CPU {} · peak RSS {} | {} |",
            p.name,
            p.rows_per_s,
            p.cpu_share
                .map(|s| format!("{:.0}% of a core", s * 100.0))
                .unwrap_or_else(|| "n/a".into()),
            p.peak_rss_mib
                .map(|r| format!("{r:.0} MiB"))
                .unwrap_or_else(|| "n/a".into()),
            pct(p.ratio_to_ceiling)
        );
    }
    let r = &b.robust;
    let _ = writeln!(
        out,
        "| robust: total committed | {:.0} rows/s | {} |",
        r.total.rows_per_s,
        pct(r.total.ratio_to_ceiling)
    );
    let _ = writeln!(
        out,
        "| robust: webui HTTP p50 / p99 | {:.1} / {:.1} ms | |",
        r.webui_p50_ms, r.webui_p99_ms
    );
    if let Some(share) = r.loadgen_cpu_share {
        let _ = writeln!(
            out,
            "| robust: the loadgen's HTTP clients | CPU {:.0}% of a core | |",
            share * 100.0
        );
    }
    if let Some(cpu) = r.locklab_cpu_s {
        let _ = writeln!(
            out,
            "| robust: locklab in all (clients, supervision, then check and report) | {:.1} CPU s | |",
            cpu
        );
    }
    let i = &b.ingester_alone;
    let _ = writeln!(
        out,
        "| ingester alone: {} events, the fastest of {} builds | {:.3} s from take to finish (each: {} s), {:.0} rows/s ({:.1}× the ceiling's {:.3} s) | {} |",
        i.events,
        i.builds,
        i.ingest_s,
        i.ingest_s_each
            .iter()
            .map(|s| format!("{s:.3}"))
            .collect::<Vec<_>>()
            .join(", "),
        i.rate.rows_per_s,
        i.time_ratio,
        i.ceiling_s,
        pct(i.rate.ratio_to_ceiling)
    );
    let w = &b.webui_alone;
    let _ = writeln!(
        out,
        "| webui alone: HTTP p50 / p99 | {:.1} / {:.1} ms, {:.0} rows/s | {} |",
        w.p50_ms,
        w.p99_ms,
        w.rate.rows_per_s,
        pct(w.rate.ratio_to_ceiling)
    );
    let _ = writeln!(
        out,
        "\nwebui p99 under the full load / alone: {:.1}×. Lock failures (gave up, busy_upgrade, \
         busy_snapshot): {}; busy_timeouts (retried, reported only): {}. {}",
        b.webui_p99_ratio, b.lock_failures, b.busy_timeouts, b.who_sampler
    );
    out
}
