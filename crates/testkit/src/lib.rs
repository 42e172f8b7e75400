//! Helpers for the tests of every crate, kept in one dev-only crate so that no
//! daemon binary carries them (STYLE.md) and five test binaries do not each
//! repeat them: a migrated SQLite file in a temp dir, a daemon started on it
//! with a clean environment, polling with a deadline (never fixed sleeps),
//! small HTTP calls, planted violations ([`plant`]), and a headless Chromium
//! driven over WebDriver ([`browser`]).

pub mod browser;
pub mod plant;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use schema::db::{DbTarget, LabConn, Policy};
use schema::settings::{parse_environments, JournalMode};

use daemon::spawn::{bin_dir, setting_variables, spawn, Child, Spec};

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
        append_log: false,
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

/// Every file in `dir` with its bytes.
fn contents(dir: &Path) -> anyhow::Result<std::collections::BTreeMap<String, Vec<u8>>> {
    let mut out = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let e = e?;
        out.insert(
            e.file_name().to_string_lossy().into_owned(),
            std::fs::read(e.path()).unwrap_or_default(),
        );
    }
    Ok(out)
}

/// Starts `binary` on `db` (with its stats and trace files in `dir`) and checks
/// that it refuses: a non-zero exit, exactly one line on stderr naming the file
/// and containing `why`, and no file in `dir` created or changed.
fn refuses(binary: &str, db: &Path, dir: &Path, why: &str) -> anyhow::Result<()> {
    use std::process::{Command, Stdio};
    let before = contents(dir)?;
    let logs = tempfile::tempdir()?;
    let stderr = logs.path().join("stderr.log");
    let mut cmd = Command::new(binary_path(binary)?);
    for var in setting_variables() {
        cmd.env_remove(var);
    }
    let mut child = cmd
        .arg("--database-url")
        .arg(db)
        .args(["--listen", "127.0.0.1:0"])
        .arg("--stats-out")
        .arg(dir.join("stats.json"))
        .arg("--trace-out")
        .arg(dir.join("trace.jsonl"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr)?)
        .spawn()?;
    let status = match wait_for("the refusal", Duration::from_secs(20), || {
        child.try_wait().ok().flatten()
    }) {
        Ok(s) => s,
        Err(e) => {
            let _ = child.kill();
            bail!("{binary} on {}: {e}", db.display());
        }
    };
    let text = std::fs::read_to_string(&stderr)?;
    if status.success() {
        bail!("{binary} accepted {} ({why}):\n{text}", db.display());
    }
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() != 1 {
        bail!("{binary} ({why}) should say why in one line:\n{text}");
    }
    let line = lines[0];
    if !(line.contains("cannot start")
        && line.contains(why)
        && line.contains(&db.display().to_string()))
    {
        bail!("{binary} ({why}): unexpected refusal: {line}");
    }
    if contents(dir)? != before {
        bail!(
            "{binary} ({why}) created or changed files in {}",
            dir.display()
        );
    }
    Ok(())
}

/// The daemons' read-only startup check, end to end: `binary` refuses a
/// missing file, an empty file, a text file and a file whose migrations are
/// behind, in one clear line each, and creates or changes nothing.
pub fn assert_refuses_bad_files(binary: &str) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    refuses(
        binary,
        &dir.path().join("missing.sqlite3"),
        dir.path(),
        "no such database file",
    )?;

    let dir = tempfile::tempdir()?;
    let empty = dir.path().join("empty.sqlite3");
    std::fs::write(&empty, b"")?;
    refuses(binary, &empty, dir.path(), "empty")?;

    let dir = tempfile::tempdir()?;
    let text = dir.path().join("notes.sqlite3");
    std::fs::write(
        &text,
        "DATABASES = {'default': {'NAME': 'toaster.sqlite'}}\n".repeat(40),
    )?;
    refuses(binary, &text, dir.path(), "not an SQLite database")?;

    // Migrated, then its migrations forgotten: every migration is pending.
    let lab = TestLab::new(JournalMode::Delete, "qemux86:1")?;
    let mut conn = lab.conn(Policy::default())?;
    crate::plant::forget_migrations(conn.diesel())?;
    drop(conn);
    refuses(binary, &lab.db, lab.path(), "pending")
}
