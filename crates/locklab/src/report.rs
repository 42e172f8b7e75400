//! report.json (the contract other tools read), the per-process table, and the
//! verdict with its diagnosis.
//!
//! Tables are comfy-table: it measures unicode widths and wraps, which a
//! hand-rolled formatter would get wrong for project names and long cells.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, CellAlignment, ContentArrangement, Table};
use schema::error::LockClass;
use schema::settings::ReportSettings;
use schema::stats::ProcessReport;
use serde::{Deserialize, Serialize};

use crate::check::CheckCounts;

/// 2: `processes[].rolled_back` and `stalls`; `ops = ok + gave_up +
/// rolled_back`. Version 1 files are read with `rolled_back` = 0.
pub const SCHEMA_VERSION: u32 = 2;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentInfo {
    pub sqlite_version: String,
    pub fs_type: String,
    pub cores: usize,
    /// The server and its version, on a server backend (`PostgreSQL 15.18`,
    /// `MariaDB 10.11.19`); null on SQLite (added field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Load {
    pub clients: u32,
    pub num: u32,
    pub sleep_s: f64,
    pub events_per_build: u32,
    /// The pace of the build events (LAB_EVENT_DELAY, or the preset's), in
    /// seconds (added field).
    #[serde(default)]
    pub event_delay_s: f64,
    /// `--needs-mix` (0: off; added field).
    #[serde(default)]
    pub needs_mix: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadgenSummary {
    pub requests: u64,
    pub status: BTreeMap<String, u64>,
    pub no_response: u64,
    pub clients_mean: f64,
    pub clients_stddev: f64,
    /// CPU seconds of the client threads (added field): the load's own cost.
    #[serde(default)]
    pub cpu_s: Option<f64>,
}

/// report.json. Fields may be added, never renamed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub preset: String,
    pub backend: String,
    pub duration_s: f64,
    pub environment: EnvironmentInfo,
    pub load: Load,
    pub settings: ReportSettings,
    pub processes: Vec<ProcessReport>,
    pub loadgen: LoadgenSummary,
    pub check: CheckCounts,
    /// The verdict, one line per finding (added field).
    #[serde(default)]
    pub verdict: Vec<String>,
    /// How long the drain took, from the end of the load to the daemons'
    /// SIGTERM; it ends by `--drain-timeout` at the latest (added field).
    #[serde(default)]
    pub drain_s: f64,
    /// Counting identities that do not hold, in words (added field; `[]` when
    /// they all hold).
    #[serde(default)]
    pub identity_violations: Vec<String>,
    /// The load window, in seconds: the loadgen's measured load (the same
    /// figure as `duration_s`; added field).
    #[serde(default)]
    pub load_s: f64,
    /// Which window each figure of `processes[]` covers: `load` (from the
    /// load's start to the drain) or `run` (the process's whole life, the drain
    /// included; added field).
    #[serde(default)]
    pub windows: BTreeMap<String, String>,
    /// Wall-clock µs when the load ended and the drain began (added field).
    #[serde(default)]
    pub load_end_us: Option<i64>,
    /// Who held the write lock at each process's failures, from the lab's own
    /// traces (added field).
    #[serde(default)]
    pub holders_at_failures: Vec<crate::holders::HoldersAtFailures>,
    /// Who held the write lock as the OS saw it, per PID, beside each
    /// daemon's own trace (added field; see `who::witness`).
    #[serde(default)]
    pub holders: Vec<crate::who::witness::Holder>,
    /// How that witness sampled (added field; null when it did not run).
    #[serde(default)]
    pub witness: Option<crate::who::witness::Witness>,
    /// Queue wait, submit to claim, over every request; one still queued at
    /// the end counts with its wait so far (added field; null with no
    /// requests).
    #[serde(default)]
    pub queue_wait_ms: Option<crate::queue::QueueWait>,
    /// The faults `locklab soak` injected (added field; absent from a run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faults: Option<crate::faults::FaultReport>,
}

/// The window of each figure, for `Report::windows`.
pub fn figure_windows() -> BTreeMap<String, String> {
    [
        ("rows_per_s", "load"),
        ("lock_wait_share", "load"),
        ("rows_in_load", "load"),
        ("ops", "run"),
        ("ok", "run"),
        ("gave_up", "run"),
        ("rolled_back", "run"),
        ("failed", "run"),
        ("rows_committed", "run"),
        ("latency_ms", "run"),
        ("stalls", "run"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

impl Report {
    pub fn read(path: &Path) -> anyhow::Result<Report> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a locklab report.json", path.display()))
    }

    pub fn gave_up_total(&self) -> u64 {
        self.processes.iter().map(|p| p.gave_up).sum()
    }

    /// Every counting identity that does not hold, over every process.
    pub fn check_identities(&self) -> Vec<String> {
        self.processes
            .iter()
            .flat_map(ProcessReport::identity_violations)
            .collect()
    }
}

/// The environment this run measured on.
pub fn environment_info(db_dir: &Path) -> EnvironmentInfo {
    EnvironmentInfo {
        sqlite_version: schema::sqlite_version(),
        fs_type: fs_type(db_dir),
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        server_version: None,
    }
}

/// The file system type of a directory, from statfs's magic number.
fn fs_type(dir: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return "unknown".to_string();
    };
    // SAFETY: statfs writes into a zeroed struct we own; c is NUL-terminated.
    let magic = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        if libc::statfs(c.as_ptr(), &mut st) != 0 {
            return "unknown".to_string();
        }
        st.f_type as i64
    };
    match magic {
        0xEF53 => "ext4",
        0x9123_683E => "btrfs",
        0x5846_5342 => "xfs",
        0x0102_1994 => "tmpfs",
        0x794C_7630 => "overlayfs",
        0x6969 => "nfs",
        0x2FC1_2FC1 => "zfs",
        0x0102_1997 => "9p",
        0x6573_5546 => "fuse",
        _ => return format!("0x{magic:x}"),
    }
    .to_string()
}

fn num(n: u64) -> Cell {
    Cell::new(n).set_alignment(CellAlignment::Right)
}

fn float(x: f64, digits: usize) -> Cell {
    Cell::new(format!("{x:.digits$}")).set_alignment(CellAlignment::Right)
}

fn other_of(p: &ProcessReport) -> u64 {
    p.failed_of(LockClass::Locked)
        + p.failed_of(LockClass::Constraint)
        + p.failed_of(LockClass::Serialization)
        + p.failed_of(LockClass::Deadlock)
        + p.failed_of(LockClass::LockWaitTimeout)
        + p.failed_of(LockClass::Other)
}

fn percent(x: f64) -> Cell {
    Cell::new(format!("{:.1}%", x * 100.0)).set_alignment(CellAlignment::Right)
}

/// A share that may not be measured (lock waits on a server): `n/a`.
fn share(x: Option<f64>) -> Cell {
    match x {
        Some(x) => percent(x),
        None => Cell::new("n/a").set_alignment(CellAlignment::Right),
    }
}

/// The per-process table: the counts a user compares across processes. By
/// default it fits 120 columns: two-line headers, the lock classes that
/// matter, rows/s and lock wait over the load window, p99. `wide` shows every
/// column.
pub fn process_table(processes: &[ProcessReport], wide: bool) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled);
    if wide {
        t.set_header(vec![
            "process",
            "ops",
            "ok",
            "rolled_back",
            "retried",
            "gave_up",
            "busy_upgrade",
            "busy_snapshot",
            "busy_timeout",
            "locked",
            "other",
            "rows",
            "rows/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "lock wait",
        ]);
        for p in processes {
            let other = other_of(p) - p.failed_of(LockClass::Locked);
            t.add_row(vec![
                Cell::new(&p.name),
                num(p.ops),
                num(p.ok),
                num(p.rolled_back),
                num(p.retried),
                num(p.gave_up),
                num(p.failed_of(LockClass::BusyUpgrade)),
                num(p.failed_of(LockClass::BusySnapshot)),
                num(p.failed_of(LockClass::BusyTimeout)),
                num(p.failed_of(LockClass::Locked)),
                num(other),
                num(p.rows_committed),
                float(p.rows_per_s, 1),
                float(p.latency_ms.p50, 1),
                float(p.latency_ms.p95, 1),
                float(p.latency_ms.p99, 1),
                share(p.lock_wait_share),
            ]);
        }
        return t;
    }
    // A server's classes get a column each when they happened; "other"
    // (locked, constraint...) only when it happened.
    let server_classes: Vec<(LockClass, &str)> = [
        (LockClass::Serialization, "serial-\nization"),
        (LockClass::Deadlock, "dead-\nlock"),
        (LockClass::LockWaitTimeout, "lock wait\ntimeout"),
    ]
    .into_iter()
    .filter(|(c, _)| processes.iter().any(|p| p.failed_of(*c) > 0))
    .collect();
    let rest = |p: &ProcessReport| {
        other_of(p)
            - server_classes
                .iter()
                .map(|(c, _)| p.failed_of(*c))
                .sum::<u64>()
    };
    let any_other = processes.iter().any(|p| rest(p) > 0);
    let mut header = vec![
        "process",
        "ops",
        "ok",
        "gave\nup",
        "re-\ntried",
        "busy\nupgrade",
        "busy\nsnapshot",
        "busy\ntimeout",
    ];
    header.extend(server_classes.iter().map(|(_, h)| *h));
    if any_other {
        header.push("other");
    }
    header.extend(["rows/s", "p99\nms", "lock\nwait"]);
    t.set_header(header);
    for p in processes {
        let mut row = vec![
            Cell::new(&p.name),
            num(p.ops),
            num(p.ok),
            num(p.gave_up),
            num(p.retried),
            num(p.failed_of(LockClass::BusyUpgrade)),
            num(p.failed_of(LockClass::BusySnapshot)),
            num(p.failed_of(LockClass::BusyTimeout)),
        ];
        row.extend(server_classes.iter().map(|(c, _)| num(p.failed_of(*c))));
        if any_other {
            row.push(num(rest(p)));
        }
        row.extend([
            float(p.rows_per_s, 0),
            float(p.latency_ms.p99, 0),
            share(p.lock_wait_share),
        ]);
        t.add_row(row);
    }
    t
}

/// The per-operation table of one process: where its failures happened.
pub fn by_op_table(p: &ProcessReport) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(vec![
            "op",
            "ops",
            "ok",
            "rolled_back",
            "retried",
            "gave_up",
            "failed by class",
            "p99 ms",
        ]);
    for (name, o) in &p.by_op {
        let failed: Vec<String> = o.failed.iter().map(|(c, n)| format!("{c} {n}")).collect();
        t.add_row(vec![
            Cell::new(name),
            num(o.ops),
            num(o.ok),
            num(o.rolled_back),
            num(o.retried),
            num(o.gave_up),
            Cell::new(if failed.is_empty() {
                "-".to_string()
            } else {
                failed.join(", ")
            }),
            float(o.latency_ms.p99, 1),
        ]);
    }
    t
}

/// Every process's per-operation table, titled.
pub fn render_by_op(r: &Report) -> String {
    let mut out = String::new();
    for p in &r.processes {
        let _ = writeln!(out, "{}:\n{}", p.name, by_op_table(p));
    }
    out
}

/// The loadgen's line: HTTP statuses as the clients saw them.
pub fn loadgen_line(l: &LoadgenSummary) -> String {
    let statuses: Vec<String> = l.status.iter().map(|(s, n)| format!("{s}: {n}")).collect();
    format!(
        "loadgen: {} requests ({}), no response: {}; successes per client: mean {:.1}, stddev {:.1}",
        l.requests,
        if statuses.is_empty() { "none".to_string() } else { statuses.join(", ") },
        l.no_response,
        l.clients_mean,
        l.clients_stddev
    )
}

/// The check's line.
pub fn check_line(c: &CheckCounts) -> String {
    let show = |v: Option<u64>| {
        v.map(|n| n.to_string())
            .unwrap_or_else(|| "n/a".to_string())
    };
    format!(
        "check: lost {} · duplicated {} · mismatched {} · double_claimed {} · double_booked {} · \
         leaked_bookings {} · leaked_partial_bookings {} · partial_writes {} · stuck {} · unconfirmed {} · unfinished {} · \
         queued_while_free {} · integrity {}",
        show(c.lost),
        show(c.duplicated),
        c.mismatched,
        c.double_claimed,
        c.double_booked,
        c.leaked_bookings,
        c.leaked_partial_bookings,
        show(c.partial_writes),
        c.stuck,
        show(c.unconfirmed),
        c.unfinished,
        c.queued_while_free,
        match c.integrity_ok {
            Some(true) => "ok",
            Some(false) => "FAILED",
            None => "n/a (server)",
        }
    )
}

fn base_name(process: &str) -> &str {
    for base in ["webui", "runbuilds", "buildinfohelper"] {
        if process == base || process.starts_with(&format!("{base}-")) {
            return base;
        }
    }
    process
}

/// The mechanism behind a class, and the remedy, in the user's stack's terms.
pub fn diagnose(process: &str, class: LockClass, s: &ReportSettings) -> String {
    let where_ = match (base_name(process), class) {
        ("webui", LockClass::BusyUpgrade | LockClass::BusySnapshot) => {
            " (ATOMIC_REQUESTS wraps the view's reads and its writes in one deferred transaction)"
        }
        ("runbuilds", LockClass::BusyUpgrade | LockClass::BusySnapshot) => {
            " (runbuilds reads the first free environment, then saves it locked, inside one transaction: \
Toaster's _selectBuildEnvironment, or the single claim under deferred transactions)"
        }
        ("buildinfohelper", LockClass::BusyUpgrade | LockClass::BusySnapshot) => {
            " (buildinfohelper creates a task row with get_or_create: its atomic block reads first, as \
Toaster's Task looks up its help text and its build, then inserts)"
        }
        _ => "",
    };
    let immediate = "begin write transactions IMMEDIATE (Django >= 5.1: DATABASES[\"default\"][\"OPTIONS\"][\"transaction_mode\"] = \"IMMEDIATE\"; \
Django 4.2: a backend subclass whose transactions begin IMMEDIATE; Rails 8: the default; diesel: immediate_transaction; \
here: LAB_TXN_MODE=immediate), or write without reading first: a filtered update whose row count says who won \
(Model.objects.filter(pk=..., state=...).update(...); here: LAB_CLAIM=guarded)";
    match class {
        LockClass::BusyUpgrade => format!(
            "a deferred transaction read, then tried to write while another connection held the write lock{where_}; \
SQLite refuses at once, without calling the busy handler, to avoid a deadlock, so no timeout can help; {immediate}."
        ),
        LockClass::BusySnapshot => format!(
            "WAL: another connection committed after this deferred transaction's first read{where_}, so its snapshot \
is stale and it may never write; waiting cannot help, only a new transaction; {immediate}."
        ),
        LockClass::BusyTimeout => format!(
            "the write lock stayed with other connections longer than the busy timeout ({} ms) and the busy \
handler gave up; a longer timeout (Django: DATABASES[\"default\"][\"OPTIONS\"][\"timeout\"], in seconds; here: TIMEOUT) \
trades these failures for latency; shorter write transactions and batched commits hold the lock less (here: \
LAB_COMMIT=batch:500); WAL (PRAGMA journal_mode=WAL: Django >= 5.1 OPTIONS init_command, 4.2 a connection_created \
handler; here: WAL=true) stops readers from blocking the writer's commit; a bounded retry of the whole \
transaction rides out the rest (here: LAB_RETRY=backoff).",
            s.busy_timeout_ms
        ),
        LockClass::Locked => "SQLITE_LOCKED: a conflict inside one connection (a statement still running, or a \
shared cache); it is a bug in the code path, not contention between processes."
            .to_string(),
        LockClass::Constraint => "a constraint violation (a duplicate or a failed CHECK): not a lock problem; \
with retries it shows a write that was retried after it had in fact been applied."
            .to_string(),
        LockClass::Serialization => "a serialization failure: the server backend aborted a transaction that \
conflicted with another; retry the whole transaction."
            .to_string(),
        LockClass::Deadlock => "a deadlock between transactions that lock rows in different orders; lock in \
one order, or retry the whole transaction."
            .to_string(),
        LockClass::LockWaitTimeout => "a row lock was held past innodb_lock_wait_timeout; shorten the \
transactions that hold it."
            .to_string(),
        LockClass::Other => "errors that are not lock failures; see the daemon's log lines for the SQLite code."
            .to_string(),
    }
}

/// Why a stall of this class cannot clear by itself.
pub fn stall_mechanism(class: Option<&str>, op: &str) -> String {
    match (class, op) {
        (Some("busy_snapshot"), _) => "busy_snapshot cannot clear while the transaction stays open: its WAL \
snapshot can never move, so every retry inside it fails the same way (a livelock); only a new \
transaction can write"
            .to_string(),
        (Some("busy_upgrade"), _) => "the retry runs inside the transaction that already read, so it keeps its \
SHARED lock; under the rollback journal the writer holding RESERVED then cannot COMMIT until its busy \
timeout gives up, and each collision costs that whole timeout"
            .to_string(),
        (Some("busy_timeout"), "sync") => "the COMMIT waited the busy timeout for readers holding SHARED and \
failed, and nothing rolled the transaction back: it stays open holding its lock (PENDING once the \
commit began), so new readers fail too, and a reader retrying inside its own transaction and this \
commit wait for each other: no timeout ends that"
            .to_string(),
        (Some("busy_timeout"), _) => "it waited the full busy timeout for another connection's lock, again \
and again"
            .to_string(),
        (None, _) => "it ran longer than twice the busy timeout".to_string(),
        (Some(c), _) => format!("it kept failing with {c}"),
    }
}

/// What a process's given-up operations meant for its users.
fn consequence(process: &str, gave_up: u64) -> String {
    match base_name(process) {
        "webui" => format!("{gave_up} HTTP requests answered 503 (a Django view would answer 500)"),
        "runbuilds" => {
            format!("{gave_up} scheduling operations abandoned (retried at the next poll: latency)")
        }
        "buildinfohelper" => {
            format!("{gave_up} event writes given up: those events are lost, silently in Toaster")
        }
        _ => format!("{gave_up} operations given up"),
    }
}

/// The verdict: per process, the dominant class's mechanism and remedy; then
/// what check found.
pub fn verdict(r: &Report) -> Vec<String> {
    let mut lines = Vec::new();
    for p in &r.processes {
        match p.dominant_class() {
            None => lines.push(format!("{}: no failed attempts.", p.name)),
            Some((class, n)) => {
                let mut line = format!(
                    "{}: {n} {class} — {}",
                    p.name,
                    diagnose(&p.name, class, &r.settings)
                );
                let others: Vec<String> = LockClass::ALL
                    .iter()
                    .filter(|c| **c != class && p.failed_of(**c) > 0)
                    .map(|c| format!("{} {c}", p.failed_of(*c)))
                    .collect();
                if !others.is_empty() {
                    let _ = write!(line, " Also: {}.", others.join(", "));
                }
                if p.gave_up > 0 {
                    let _ = write!(line, " Cost: {}.", consequence(&p.name, p.gave_up));
                } else if p.retried > 0 {
                    let _ = write!(
                        line,
                        " Every failure was retried (p99 {:.0} ms): the failures turned into latency.",
                        p.latency_ms.p99
                    );
                }
                lines.push(line);
                // Where the failures happened, per operation.
                let per_op: Vec<String> = p
                    .by_op
                    .iter()
                    .filter(|(_, o)| !o.failed.is_empty())
                    .map(|(name, o)| {
                        let classes: Vec<String> =
                            o.failed.iter().map(|(c, n)| format!("{n} {c}")).collect();
                        format!("{name}: {}", classes.join(", "))
                    })
                    .collect();
                if !per_op.is_empty() {
                    lines.push(format!("{} by op: {}.", p.name, per_op.join("; ")));
                }
                if let Some(h) = r
                    .holders_at_failures
                    .iter()
                    .find(|h| h.process == p.name)
                    .and_then(|h| h.line())
                {
                    lines.push(format!("{h}."));
                }
            }
        }
        if p.stalls_total > 0 {
            let first = &p.stalls[0];
            let mut line = format!(
                "{}: {} stall{} — {} {}: {}; {}.",
                p.name,
                p.stalls_total,
                if p.stalls_total == 1 { "" } else { "s" },
                first.op,
                if first.ongoing {
                    "still stalled at the end"
                } else if first.abandoned {
                    "abandoned at shutdown"
                } else {
                    "stalled"
                },
                first.why,
                stall_mechanism(first.class.as_deref(), &first.op)
            );
            let longest = p.stalls.iter().map(|s| s.seconds).fold(0.0_f64, f64::max);
            let _ = write!(line, " Longest: {longest:.1} s.");
            lines.push(line);
        }
    }
    let c = &r.check;
    let mut problems = Vec::new();
    if c.lost.unwrap_or(0) > 0 {
        problems.push(format!("{} rows or events lost", c.lost.unwrap_or(0)));
    }
    if c.partial_writes.unwrap_or(0) > 0 {
        problems.push(format!(
            "{} rows written by requests that were answered with a failure (partial writes: without \
ATOMIC_REQUESTS every statement autocommits; ATOMIC_REQUESTS only helps together with IMMEDIATE \
transactions, or it trades these for busy_upgrade)",
            c.partial_writes.unwrap_or(0)
        ));
    }
    if c.double_claimed > 0 {
        problems.push(format!(
            "{} requests claimed twice (Toaster's claim reads and writes in separate transactions; use \
LAB_CLAIM=guarded or single with IMMEDIATE)",
            c.double_claimed
        ));
    }
    for (n, what) in [
        (c.duplicated.unwrap_or(0), "duplicated"),
        (c.mismatched, "mismatched events"),
        (c.double_booked, "double bookings"),
        (c.leaked_bookings, "leaked bookings"),
        (
            c.leaked_partial_bookings,
            "leaked partial bookings (booking rows a rolled-back claim left behind)",
        ),
        (
            c.stuck,
            if c.stuck_untaken > 0 {
                "stuck requests (in progress after the drain with no live owner; for those whose build \
no ingester ever took, the one ingester was still busy with another build)"
            } else {
                "stuck requests (in progress after the drain with no live owner)"
            },
        ),
        (c.unlogged.unwrap_or(0), "rows no logged HTTP request made"),
        (
            c.misattributed.unwrap_or(0),
            "ids returned to the wrong HTTP request",
        ),
        (
            c.beyond_expected,
            "events beyond their build's expected count",
        ),
    ] {
        if n > 0 {
            problems.push(format!("{n} {what}"));
        }
    }
    if c.integrity_ok == Some(false) {
        problems.push("PRAGMA integrity_check failed".to_string());
    }
    if problems.is_empty() {
        lines.push("data: every check passed.".to_string());
    } else {
        lines.push(format!("data: {}.", problems.join("; ")));
    }
    if c.queued_while_free > 0 {
        lines.push(format!(
            "queue: {} requests stayed queued while environments that fit them were free for {} or \
more{}: the scheduler did not see them (a poll inside one long transaction under repeatable read \
keeps one snapshot; read committed, or a transaction per poll, cures it).",
            c.queued_while_free,
            crate::queue::GRACE,
            r.queue_wait_ms
                .map(|w| format!(" (queue wait p50 {:.1} s, max {:.1} s)", w.p50 / 1000.0, w.max / 1000.0))
                .unwrap_or_default()
        ));
    }
    let not_undone: u64 = r.processes.iter().map(|p| p.rollbacks_not_undone).sum();
    if not_undone > 0 {
        lines.push(format!(
            "data: {not_undone} ROLLBACKs did not undo their changes (MySQL warning 1196: \
non-transactional tables); what they wrote stays."
        ));
    }
    if c.orphaned_builds > 0 {
        lines.push(format!(
            "data: {} Build rows were left without a request (Toaster's create deletes the request \
when a later step fails, and keeps the Build row).",
            c.orphaned_builds
        ));
    }
    let unchecked = c.unchecked();
    if !unchecked.is_empty() {
        lines.push(format!(
            "data: not checked without the loadgen log: {}.",
            unchecked.join(", ")
        ));
    }
    for v in r.check_identities() {
        lines.push(format!("counting: identity does not hold: {v}."));
    }
    if r.processes.iter().any(|p| {
        p.failed_of(LockClass::BusyUpgrade)
            + p.failed_of(LockClass::BusySnapshot)
            + p.failed_of(LockClass::BusyTimeout)
            > 0
    }) {
        lines.push(
            "advise: `locklab advise --django 4.2 DIR` (or 5.1, 5.2, --rails 8) prints these \
remedies as code to paste, each with its cost; scripts/test-advice runs them."
                .to_string(),
        );
    }
    lines
}

/// The whole text shown after a run and by `locklab report`.
/// The width verdict lines wrap at: the terminal's, else 100; at most 120.
pub fn wrap_width() -> usize {
    textwrap::termwidth().clamp(60, 120)
}

/// A verdict line wrapped at `width`, continuation lines indented.
pub fn wrap_line(line: &str, width: usize) -> String {
    let opts = textwrap::Options::new(width)
        .initial_indent("  ")
        .subsequent_indent("    ");
    textwrap::fill(line, opts)
}

pub fn render_text(r: &Report) -> String {
    render_text_with(r, false, wrap_width())
}

/// The text after a run: header, table (`wide`: every column), loadgen and
/// check lines, the witness, and the verdict wrapped at `width`.
pub fn render_text_with(r: &Report, wide: bool, width: usize) -> String {
    let mut out = String::new();
    let (storage, begin) = match r.backend.as_str() {
        "sqlite" | "" => (
            format!("journal {}", r.settings.journal_mode),
            format!("txn {}", r.settings.txn_mode),
        ),
        backend => (
            if backend == "mysql" && !r.settings.mysql_engine.is_empty() {
                format!("engine {}", r.settings.mysql_engine)
            } else {
                format!("{backend} server")
            },
            format!(
                "isolation {}{}",
                r.settings.isolation,
                if r.settings.poll_txn {
                    " · poll txn"
                } else {
                    ""
                }
            ),
        ),
    };
    let header = format!(
        "preset {} · {} · {} · timeout {} ms · {} · atomic {} · retry {} · claim {} · commit {} · {:.1}s",
        r.preset,
        r.backend,
        storage,
        r.settings.busy_timeout_ms,
        begin,
        r.settings.atomic_requests,
        r.settings.retry,
        r.settings.claim,
        r.settings.commit,
        r.duration_s
    );
    let _ = writeln!(
        out,
        "{}",
        textwrap::fill(
            &header,
            textwrap::Options::new(width).subsequent_indent("  ")
        )
    );
    let _ = writeln!(out, "{}", process_table(&r.processes, wide));
    let load_s = r.processes.iter().map(|p| p.load_s).fold(0.0_f64, f64::max);
    if load_s > 0.0 {
        let _ = writeln!(
            out,
            "rows/s and lock wait cover the {load_s:.1} s of load; the drain took {:.1} s apart.",
            r.drain_s
        );
    }
    for v in &r.identity_violations {
        let _ = writeln!(out, "counting identity violated: {v}");
    }
    let plain = textwrap::Options::new(width).subsequent_indent("  ");
    let _ = writeln!(
        out,
        "{}",
        textwrap::fill(&loadgen_line(&r.loadgen), plain.clone())
    );
    let _ = writeln!(out, "{}", textwrap::fill(&check_line(&r.check), plain));
    out.push_str(&crate::who::witness::render_text(
        &r.holders,
        r.witness.as_ref(),
    ));
    let _ = writeln!(out);
    let _ = writeln!(out, "verdict:");
    for line in &r.verdict {
        let _ = writeln!(out, "{}", wrap_line(line, width));
    }
    out
}

/// report.md: the same, as Markdown.
pub fn render_markdown(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# locklab run: preset {}\n", r.preset);
    let _ = writeln!(
        out,
        "SQLite {} on {} ({} cores) · {:.1} s of load: {} clients × NUM {} · {} events per build\n",
        r.environment.sqlite_version,
        r.environment.fs_type,
        r.environment.cores,
        r.duration_s,
        r.load.clients,
        r.load.num,
        r.load.events_per_build
    );
    let _ = writeln!(
        out,
        "| journal | timeout | synchronous | txn | atomic | retry | claim | commit | txn work |\n|---|---|---|---|---|---|---|---|---|\n| {} | {} ms | {} | {} | {} | {} | {} | {} | {} ms |\n",
        r.settings.journal_mode,
        r.settings.busy_timeout_ms,
        r.settings.synchronous,
        r.settings.txn_mode,
        r.settings.atomic_requests,
        r.settings.retry,
        r.settings.claim,
        r.settings.commit,
        r.settings.txn_work_ms
    );
    let _ = writeln!(
        out,
        "| process | ops | ok | rolled_back | retried | gave_up | busy_upgrade | busy_snapshot | busy_timeout | other | rows | p95 ms | lock wait |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for p in &r.processes {
        let other = p.failed_total()
            - p.failed_of(LockClass::BusyUpgrade)
            - p.failed_of(LockClass::BusySnapshot)
            - p.failed_of(LockClass::BusyTimeout);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} |",
            p.name,
            p.ops,
            p.ok,
            p.rolled_back,
            p.retried,
            p.gave_up,
            p.failed_of(LockClass::BusyUpgrade),
            p.failed_of(LockClass::BusySnapshot),
            p.failed_of(LockClass::BusyTimeout),
            other,
            p.rows_committed,
            p.latency_ms.p95,
            p.lock_wait_share
                .map(|s| format!("{:.1}%", s * 100.0))
                .unwrap_or_else(|| "n/a".to_string())
        );
    }
    let _ = writeln!(
        out,
        "\n{}\n\n{}\n",
        loadgen_line(&r.loadgen),
        check_line(&r.check)
    );
    let witness = crate::who::witness::render_text(&r.holders, r.witness.as_ref());
    if !witness.is_empty() {
        let _ = writeln!(out, "```text\n{}```\n", witness);
    }
    let _ = writeln!(out, "## Verdict\n");
    for line in &r.verdict {
        let _ = writeln!(out, "- {line}");
    }
    let _ = writeln!(out, "\n## Per operation\n");
    for p in &r.processes {
        let _ = writeln!(
            out,
            "### {}\n\n| op | ops | ok | rolled_back | retried | gave_up | failed by class | p99 ms |\n|---|---:|---:|---:|---:|---:|---|---:|",
            p.name
        );
        for (name, o) in &p.by_op {
            let failed: Vec<String> = o.failed.iter().map(|(c, n)| format!("{c} {n}")).collect();
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {} | {} | {} | {:.1} |",
                o.ops,
                o.ok,
                o.rolled_back,
                o.retried,
                o.gave_up,
                if failed.is_empty() {
                    "-".to_string()
                } else {
                    failed.join(", ")
                },
                o.latency_ms.p99
            );
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "\n![lock timeline](timeline.svg)");
    out
}

/// One process as its own trace shows it (`report --traces`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TraceSummary {
    pub process: String,
    /// Attempts in the trace that committed.
    pub committed: u64,
    /// Failed attempts by class (every class present).
    pub failed: BTreeMap<String, u64>,
    /// Failed attempts by operation and class.
    pub failed_by_op: BTreeMap<String, BTreeMap<String, u64>>,
    /// `NAME: HOLDER held it at N of M`, when it failed.
    pub holders: Option<String>,
}

/// Per-process summaries from trace files alone.
pub fn from_traces(files: &[std::path::PathBuf]) -> anyhow::Result<Vec<TraceSummary>> {
    let mut events = Vec::new();
    for f in files {
        events.extend(
            schema::trace::read_trace(f).with_context(|| format!("reading {}", f.display()))?,
        );
    }
    let mut out: BTreeMap<String, TraceSummary> = BTreeMap::new();
    for e in &events {
        let s = out
            .entry(e.process.clone())
            .or_insert_with(|| TraceSummary {
                process: e.process.clone(),
                failed: LockClass::ALL
                    .iter()
                    .map(|c| (c.as_str().to_string(), 0))
                    .collect(),
                ..TraceSummary::default()
            });
        match e.outcome.as_str() {
            "commit" => s.committed += 1,
            "failed" => {
                let class = e.class.unwrap_or(LockClass::Other).as_str().to_string();
                *s.failed.entry(class.clone()).or_default() += 1;
                *s.failed_by_op
                    .entry(e.op.clone())
                    .or_default()
                    .entry(class)
                    .or_default() += 1;
            }
            _ => {}
        }
    }
    for h in crate::holders::attribute(&events) {
        if let Some(s) = out.get_mut(&h.process) {
            s.holders = h.line();
        }
    }
    Ok(out.into_values().collect())
}

/// The table of `report --traces`.
pub fn traces_table(summaries: &[TraceSummary]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(120)
        .set_header(vec![
            "process",
            "committed",
            "busy\nupgrade",
            "busy\nsnapshot",
            "busy\ntimeout",
            "other",
            "failed by operation",
        ]);
    for s in summaries {
        let get = |c: LockClass| s.failed.get(c.as_str()).copied().unwrap_or(0);
        let other: u64 = s.failed.values().sum::<u64>()
            - get(LockClass::BusyUpgrade)
            - get(LockClass::BusySnapshot)
            - get(LockClass::BusyTimeout);
        let by_op: Vec<String> = s
            .failed_by_op
            .iter()
            .map(|(op, c)| {
                let classes: Vec<String> = c.iter().map(|(k, n)| format!("{n} {k}")).collect();
                format!("{op}: {}", classes.join(", "))
            })
            .collect();
        t.add_row(vec![
            Cell::new(&s.process),
            num(s.committed),
            num(get(LockClass::BusyUpgrade)),
            num(get(LockClass::BusySnapshot)),
            num(get(LockClass::BusyTimeout)),
            num(other),
            Cell::new(by_op.join("; ")),
        ]);
    }
    t
}
