//! Helpers for the end-to-end tests of the daemon crates and the CLI, kept in
//! one place so that four test binaries do not each repeat them: a migrated
//! SQLite file in a temp dir, a daemon started on it with a clean environment,
//! polling with a deadline (never fixed sleeps), and small HTTP calls.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use schema::db::{DbTarget, LabConn, Policy};
use schema::settings::{parse_environments, JournalMode};

use crate::spawn::{bin_dir, setting_variables, spawn, Child, Spec};

/// A real, migrated SQLite file in its own temp dir, with room for logs.
pub struct TestLab {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
}

impl TestLab {
    /// Migrates a fresh file with the given journal mode and environments
    /// (`kind:count,...`).
    pub fn new(journal: JournalMode, environments: &str) -> anyhow::Result<TestLab> {
        let dir = tempfile::tempdir().context("creating a temp dir")?;
        let db = dir.path().join("lab.sqlite3");
        let envs = parse_environments(environments).map_err(anyhow::Error::msg)?;
        schema::migrate::migrate(&DbTarget::Sqlite(db.clone()), journal, &envs)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(TestLab { dir, db })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn target(&self) -> DbTarget {
        DbTarget::Sqlite(self.db.clone())
    }

    /// A connection with the given policy.
    pub fn conn(&self, policy: Policy) -> anyhow::Result<LabConn> {
        LabConn::open(&self.target(), Arc::new(policy), false).map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Starts a daemon binary on this lab's file (see [`start`]).
    pub fn start(&self, binary: &str, name: &str, extra: &[&str]) -> anyhow::Result<Child> {
        start(binary, name, &self.db, self.path(), extra)
    }
}

/// Starts `bin_dir()/<binary>` on `db`: a free port, stats into
/// `dir/stats-<name>.json`, a 1 s summary, the caller's `extra` flags, and none
/// of the caller's LAB_* or demo variables.
pub fn start(
    binary: &str,
    name: &str,
    db: &Path,
    dir: &Path,
    extra: &[&str],
) -> anyhow::Result<Child> {
    let bin = binary_path(binary)?;
    let mut args: Vec<OsString> = vec![
        "--database-url".into(),
        db.into(),
        "--name".into(),
        name.into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--stats-out".into(),
        dir.join(format!("stats-{name}.json")).into(),
        "--stats-interval".into(),
        "1s".into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    spawn(Spec {
        bin: &bin,
        name,
        args,
        env: vec![("RUST_LOG".to_string(), "info".to_string())],
        env_remove: setting_variables(),
        log: dir.join(format!("{name}.log")),
        startup_timeout: Duration::from_secs(30),
    })
}

/// The path of a workspace binary next to the running test, or an error that
/// says how to build it.
pub fn binary_path(binary: &str) -> anyhow::Result<PathBuf> {
    let bin = bin_dir()?.join(binary);
    if !bin.is_file() {
        bail!(
            "{} is missing: the end-to-end tests need every binary; run `cargo build --workspace` first",
            bin.display()
        );
    }
    Ok(bin)
}

/// Polls `f` every 50 ms until it returns Some, or fails after `within`.
pub fn wait_for<T>(
    what: &str,
    within: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {within:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An HTTP answer: status, headers of interest and the body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub retry_after: Option<String>,
    pub body: String,
}

impl Answer {
    /// The body as JSON (Null if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(60)))
        .http_status_as_error(false)
        .build()
        .into()
}

fn answer(resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> anyhow::Result<Answer> {
    let mut resp = resp.context("HTTP request")?;
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let status = resp.status().as_u16();
    let content_type = header("content-type").unwrap_or_default();
    let retry_after = header("retry-after");
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    Ok(Answer {
        status,
        content_type,
        retry_after,
        body,
    })
}

/// GET `url`.
pub fn get(url: &str) -> anyhow::Result<Answer> {
    answer(agent().get(url).call())
}

/// Sends `method` to `url` with a body, a content type and extra headers.
pub fn send(
    method: &str,
    url: &str,
    content_type: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> anyhow::Result<Answer> {
    let req = ureq::http::Request::builder().method(method).uri(url);
    let req = headers
        .iter()
        .fold(req, |r, (k, v)| r.header(*k, *v))
        .header("content-type", content_type)
        .body(body.to_vec())
        .context("building the request")?;
    answer(agent().run(req))
}

/// POSTs JSON to `url`.
pub fn post_json(url: &str, body: &serde_json::Value) -> anyhow::Result<Answer> {
    send(
        "POST",
        url,
        "application/json",
        body.to_string().as_bytes(),
        &[],
    )
}
