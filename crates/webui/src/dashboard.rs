//! `/`: the live contention dashboard, and `GET /api/dashboard`, the JSON its
//! script polls every second.
//!
//! - Counters per process: webui's own are [`daemon::Daemon::stats_json`],
//!   the very body of its `/api/stats`; each peer's come from
//!   `{url}/api/stats` (`LAB_STATS_URLS`), read server-side in parallel with
//!   a short timeout. A peer whose stats carry webui's own name is webui
//!   itself and is not shown twice. An unreachable peer is listed as such and
//!   the page still answers 200.
//! - Who holds SQLite's write lock now: one `who` sample (F_GETLK) of the
//!   database file, taken **in a child process** (this binary with the hidden
//!   `--who-snapshot FILE`). Not in webui itself, for two reasons: POSIX locks
//!   belong to a process, so closing *any* descriptor of the file in webui
//!   would silently release every lock webui's own SQLite connections hold on
//!   it (fcntl(2); sqlite.org/howtocorrupt.html §2.2), and F_GETLK never
//!   reports the caller's own locks, so webui could not see itself holding it.
//! - The newest verdict under `LAB_RUNS_DIR`.
//!
//! `/api/dashboard` reads nothing from the database: polling it costs the lab
//! no operation, so with the load stopped its counters equal `/api/stats`.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};
use askama::Template;
use schema::models::{BuildRequest, Environment};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::pages::{self, html, read, PageError};
use crate::App;

/// How long a peer's `/api/stats` may take.
pub const PEER_TIMEOUT: Duration = Duration::from_millis(800);
/// How long the lock sample's child process may take.
pub const WHO_TIMEOUT: Duration = Duration::from_secs(2);
/// The dashboard's script, served as `/static/dashboard.js`.
pub const SCRIPT: &str = include_str!("../static/dashboard.js");

/// One process's counters and settings.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessView {
    pub name: String,
    /// The base URL it was read from; None for webui itself.
    pub url: Option<String>,
    pub this: bool,
    pub ops: u64,
    pub ok: u64,
    pub gave_up: u64,
    pub retried: u64,
    pub rolled_back: u64,
    /// Failed attempts by class, every class the process reports.
    pub failed: BTreeMap<String, u64>,
    pub failed_total: u64,
    pub draining: bool,
    /// The stats' `settings`, each value as text.
    pub settings: Vec<(String, String)>,
}

impl ProcessView {
    /// Reads a `/api/stats` body.
    pub fn from_stats(v: &Value, url: Option<&str>, this: bool) -> ProcessView {
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        let failed: BTreeMap<String, u64> = v["failed"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        ProcessView {
            name: v["name"].as_str().unwrap_or("?").to_string(),
            url: url.map(str::to_string),
            this,
            ops: n("ops"),
            ok: n("ok"),
            gave_up: n("gave_up"),
            retried: n("retried"),
            rolled_back: n("rolled_back"),
            failed_total: failed.values().sum(),
            failed,
            draining: v["draining"].as_bool().unwrap_or(false),
            settings: v["settings"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| {
                            let text = match v {
                                Value::String(s) => s.clone(),
                                Value::Null => "—".to_string(),
                                other => other.to_string(),
                            };
                            (k.clone(), text)
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// A peer whose stats could not be read.
#[derive(Debug, Clone, Serialize)]
pub struct Unreachable {
    pub url: String,
    pub error: String,
}

/// A process holding the write lock.
#[derive(Debug, Clone, Serialize)]
pub struct Holder {
    pub pid: i32,
    pub mode: String,
    /// The lab's name for it when known (`runbuilds-2`), else its command name.
    pub process: String,
    pub command: String,
}

/// Who holds SQLite's write lock at this instant.
#[derive(Debug, Clone, Serialize)]
pub struct LockView {
    /// False on a server backend.
    pub applies: bool,
    /// What the sample is, or why there is none.
    pub note: String,
    pub holders: Vec<Holder>,
    pub warnings: Vec<String>,
}

/// The newest run's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct VerdictView {
    pub run: String,
    pub lines: Vec<String>,
}

/// The body of `GET /api/dashboard`.
#[derive(Debug, Clone, Serialize)]
pub struct Dashboard {
    /// Wall-clock ms of this sample.
    pub at_ms: i64,
    pub processes: Vec<ProcessView>,
    /// Whether LAB_STATS_URLS names any peer.
    pub peers_configured: bool,
    pub unreachable: Vec<Unreachable>,
    pub lock: LockView,
    /// Whether LAB_RUNS_DIR is set.
    pub runs_dir_set: bool,
    pub verdict: Option<VerdictView>,
}

impl Dashboard {
    /// Failure classes any process has seen, in order: the table's columns.
    pub fn classes(&self) -> Vec<String> {
        let mut classes: Vec<String> = self
            .processes
            .iter()
            .flat_map(|p| {
                p.failed
                    .iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(c, _)| c.clone())
            })
            .collect();
        classes.sort();
        classes.dedup();
        classes
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(PEER_TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into()
}

/// Reads one peer's `/api/stats`.
fn scrape(agent: &ureq::Agent, url: &str) -> Result<Value, String> {
    let mut resp = agent
        .get(format!("{url}/api/stats"))
        .call()
        .map_err(|e| e.to_string())?;
    if resp.status() != 200 {
        return Err(format!("HTTP {}", resp.status().as_u16()));
    }
    resp.body_mut()
        .read_json::<Value>()
        .map_err(|e| format!("not stats JSON: {e}"))
}

/// Every peer's stats, read in parallel.
fn scrape_all(urls: &[String]) -> Vec<(String, Result<Value, String>)> {
    let agent = agent();
    std::thread::scope(|s| {
        let handles: Vec<_> = urls
            .iter()
            .map(|u| {
                let agent = &agent;
                (u.clone(), s.spawn(move || scrape(agent, u)))
            })
            .collect();
        handles
            .into_iter()
            .map(|(u, h)| {
                let r = h
                    .join()
                    .unwrap_or_else(|_| Err("the scrape panicked".to_string()));
                (u, r)
            })
            .collect()
    })
}

/// What the child prints.
#[derive(Debug, Serialize, Deserialize)]
struct ChildSample {
    writers: Vec<(i32, String)>,
    warnings: Vec<String>,
}

/// The child's side of `--who-snapshot FILE`: one F_GETLK sample of FILE as
/// JSON on stdout.
pub fn who_child(path: &Path) -> ExitCode {
    match who::snapshot(path, who::watch::ProbeMode::Getlk) {
        Ok((sample, warnings)) => {
            let out = ChildSample {
                writers: sample
                    .writers()
                    .into_iter()
                    .map(|(pid, m)| (pid, m.as_str().to_string()))
                    .collect(),
                warnings,
            };
            println!("{}", serde_json::to_string(&out).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the child and reads its sample.
fn sample_in_child(path: &Path) -> Result<ChildSample, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find webui's binary: {e}"))?;
    let mut child = Command::new(exe)
        .arg("--who-snapshot")
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the lock sampler: {e}"))?;
    let deadline = Instant::now() + WHO_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("the lock sampler took too long".to_string());
            }
            Err(e) => return Err(format!("waiting for the lock sampler: {e}")),
        }
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    if !status.success() {
        return Err(format!("the lock sampler failed: {}", err.trim()));
    }
    serde_json::from_str(out.trim()).map_err(|e| format!("the lock sampler's answer: {e}"))
}

/// The lab's name of a PID: `--name X` on its command line, else
/// LAB_PROCESS_NAME in its environment (readable for our own user's
/// processes), else its command name.
fn lab_name(pid: i32, info: &who::procinfo::ProcInfo) -> String {
    let mut args = info.cmdline.split(' ');
    while let Some(a) = args.next() {
        if a == "--name" {
            if let Some(n) = args.next() {
                return n.to_string();
            }
        }
        if let Some(n) = a.strip_prefix("--name=") {
            return n.to_string();
        }
    }
    if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) {
        for var in env.split(|b| *b == 0) {
            if let Some(v) = var.strip_prefix(b"LAB_PROCESS_NAME=") {
                if !v.is_empty() {
                    return String::from_utf8_lossy(v).to_string();
                }
            }
        }
    }
    info.name.clone()
}

fn lock_view(app: &App) -> LockView {
    let target = &app.daemon.settings.database.value;
    let Some(path) = target.sqlite_path() else {
        return LockView {
            applies: false,
            note: format!(
                "Does not apply: the backend is {}, whose server arbitrates its own locks; \
                 there is no SQLite file lock to watch.",
                target.kind()
            ),
            holders: Vec::new(),
            warnings: Vec::new(),
        };
    };
    match sample_in_child(path) {
        Err(e) => LockView {
            applies: true,
            note: format!("No sample: {e}."),
            holders: Vec::new(),
            warnings: Vec::new(),
        },
        Ok(s) => {
            let me = std::process::id() as i32;
            LockView {
                applies: true,
                note: "One F_GETLK sample of the database file at this instant, taken by a \
                       child process (a hold shorter than a second may fall between samples)."
                    .to_string(),
                holders: s
                    .writers
                    .into_iter()
                    .map(|(pid, mode)| {
                        let info = who::procinfo::proc_info(pid);
                        let process = if pid == me {
                            format!("{} (this process)", app.daemon.name())
                        } else if pid <= 0 {
                            info.name.clone()
                        } else {
                            lab_name(pid, &info)
                        };
                        Holder {
                            pid,
                            mode,
                            process,
                            command: who::procinfo::short_command(&info.name, &info.cmdline, 120),
                        }
                    })
                    .collect(),
                warnings: s.warnings,
            }
        }
    }
}

/// Takes one dashboard sample (blocking: peers, the lock, the runs).
pub fn collect(app: &App) -> Dashboard {
    let d = &app.daemon;
    let own = ProcessView::from_stats(&d.stats_json(), None, true);
    let mut processes = vec![own];
    let mut unreachable = Vec::new();
    for (url, got) in scrape_all(&app.own.stats_urls) {
        match got {
            Ok(v) => {
                let p = ProcessView::from_stats(&v, Some(&url), false);
                // webui's own URL may be in the list: its name says so.
                if !processes.iter().any(|q| q.name == p.name) {
                    processes.push(p);
                }
            }
            Err(error) => unreachable.push(Unreachable { url, error }),
        }
    }
    let runs_dir = app.own.runs_dir.as_ref().map(|d| d.value.clone());
    Dashboard {
        at_ms: schema::types::now_micros() / 1000,
        processes,
        peers_configured: !app.own.stats_urls.is_empty(),
        unreachable,
        lock: lock_view(app),
        runs_dir_set: runs_dir.is_some(),
        verdict: runs_dir
            .as_deref()
            .and_then(crate::pages::runs::latest_verdict)
            .map(|(run, lines)| VerdictView { run, lines }),
    }
}

async fn collect_async(app: &web::Data<App>) -> Result<Dashboard, PageError> {
    let app = app.clone();
    web::block(move || collect(&app))
        .await
        .map_err(|e| PageError::Internal(format!("blocking task failed: {e}")))
}

/// `GET /api/dashboard`.
pub async fn json(app: web::Data<App>) -> Result<HttpResponse, PageError> {
    let dash = collect_async(&app).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(dash))
}

/// `GET /static/dashboard.js`.
pub async fn script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header(("Cache-Control", "max-age=300"))
        .body(SCRIPT)
}

pub struct RecentRow {
    pub id: i64,
    pub project: String,
    pub state: String,
    pub badge: &'static str,
    pub needs: String,
    pub client_request_id: String,
    pub reason: String,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct Page {
    title: &'static str,
    active: &'static str,
    name: String,
    draining: bool,
    dash: Dashboard,
    classes: Vec<String>,
    states: BTreeMap<String, i64>,
    environments: BTreeMap<String, (u32, u32)>,
    recent: Vec<RecentRow>,
}

/// `GET /`.
pub async fn index(app: web::Data<App>) -> Result<HttpResponse, PageError> {
    let (states, envs, recent) = read(&app, "page", |c| {
        Ok((
            BuildRequest::count_by_state(c)?,
            Environment::all(c)?,
            BuildRequest::recent(c, 20)?,
        ))
    })
    .await?;
    let dash = collect_async(&app).await?;
    let mut environments: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    for e in envs {
        let k = environments.entry(e.kind).or_default();
        k.0 += 1;
        if e.lock_state == schema::types::LockState::Free {
            k.1 += 1;
        }
    }
    html(&Page {
        title: "Dashboard",
        active: "dashboard",
        name: app.daemon.name().to_string(),
        draining: app.daemon.is_draining(),
        classes: dash.classes(),
        dash,
        states,
        environments,
        recent: recent
            .into_iter()
            .map(|(r, project)| RecentRow {
                id: r.id.0,
                project,
                state: r.state.to_string(),
                badge: pages::badge(r.state.as_str()),
                needs: pages::builds::needs_text(&r.needs()),
                client_request_id: r.client_request_id.clone().unwrap_or_default(),
                reason: r.reason.clone().unwrap_or_default(),
            })
            .collect(),
    })
}
