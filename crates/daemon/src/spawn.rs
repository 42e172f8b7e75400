//! Starting a daemon binary as a child process and waiting until it listens:
//! used by `locklab run` and by the end-to-end tests. The child is killed when
//! its handle is dropped, so an error or a failed test never leaves a daemon
//! behind. Its stderr is the log file itself (opened here, appended to by
//! the child), so a line is in the file as soon as the daemon writes it.

use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The directory holding the binaries next to the running executable. From a
/// test binary (`target/<profile>/deps/it-...`) that is `target/<profile>`.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the running executable")?;
    let mut dir = exe
        .parent()
        .context("the executable has no directory")?
        .to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    Ok(dir)
}

/// Every environment variable a locklab setting reads (LAB_* and the demo's
/// aliases), for tests that must not inherit the caller's.
pub fn setting_variables() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = Vec::new();
    for d in schema::settings::def::all() {
        v.push(d.env);
        if let Some(a) = d.alias {
            v.push(a);
        }
    }
    v.extend(["LAB_TARGET", "LAB_LOADGEN_LOG"]);
    v
}

/// A running daemon.
pub struct Child {
    pub name: String,
    pub child: std::process::Child,
    /// `http://ADDR` as the daemon logged it (`listening on ADDR`).
    pub url: String,
    pub log: PathBuf,
}

impl Child {
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap_or(0)
    }

    /// Sends a signal (SIGTERM, SIGKILL, SIGUSR1...).
    pub fn signal(&self, sig: i32) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// Sends SIGTERM and waits up to `within` for the exit; kills it after.
    pub fn terminate(&mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        self.signal(SIGTERM);
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let status = self.child.wait()?;
                bail!(
                    "{} did not stop within {within:?} of SIGTERM; killed ({status})",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log once it has a line for which `found` holds, or None after
    /// `within`: for a line the daemon writes just after the effect a test
    /// sees (an answer goes out before its log line is written).
    pub fn wait_log(&self, within: Duration, found: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let text = self.log_text();
            if text.lines().any(&found) {
                return Some(text);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub use libc::{SIGKILL, SIGTERM, SIGUSR1};

/// What to start.
pub struct Spec<'a> {
    pub bin: &'a Path,
    pub name: &'a str,
    pub args: Vec<OsString>,
    /// Variables to set.
    pub env: Vec<(String, String)>,
    /// Variables to remove first (e.g. [`setting_variables`]).
    pub env_remove: Vec<&'a str>,
    /// Where the daemon's log goes.
    pub log: PathBuf,
    /// Append to the log instead of starting it afresh (a restarted daemon
    /// keeps its predecessor's lines).
    pub append_log: bool,
    pub startup_timeout: Duration,
}

/// Starts the daemon and waits for its `listening on ADDR` line. If it exits
/// first, the error carries the last lines of its log (its refusal).
pub fn spawn(spec: Spec<'_>) -> anyhow::Result<Child> {
    let mut cmd = Command::new(spec.bin);
    for name in &spec.env_remove {
        cmd.env_remove(name);
    }
    // Its own process group: a Ctrl-C in the terminal reaches only the parent
    // (locklab run), which then drains the daemons in order instead of losing
    // them all at once.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    // The log is the child's stderr: opened here (afresh, or appended to by
    // a restarted instance), written by the child with no copier between.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(spec.append_log)
        .truncate(!spec.append_log)
        .open(&spec.log)
        .with_context(|| format!("opening the log {}", spec.log.display()))?;
    // This instance's lines start here (a restart appends after its
    // predecessor's).
    let from = log.metadata().map(|m| m.len()).unwrap_or(0);
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", spec.bin.display()))?;
    let name = spec.name.to_string();
    let last_lines = |path: &Path| {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    };
    let deadline = Instant::now() + spec.startup_timeout;
    loop {
        if let Some(addr) = listening_addr(&spec.log, from) {
            return Ok(Child {
                name,
                child,
                url: format!("http://{addr}"),
                log: spec.log,
            });
        }
        if let Some(status) = child.try_wait().context("waiting for the daemon")? {
            // It may have listened and died at once: the file says which.
            if listening_addr(&spec.log, from).is_none() {
                bail!(
                    "{name} exited at startup ({status}):\n{}",
                    last_lines(&spec.log)
                );
            }
            continue;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!(
                "{name} did not start listening within {:?}; see {}",
                spec.startup_timeout,
                spec.log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The address of the `listening on ADDR` line written after byte `from` of
/// the log, once it is there.
fn listening_addr(log: &Path, from: u64) -> Option<String> {
    let mut f = std::fs::File::open(log).ok()?;
    f.seek(SeekFrom::Start(from)).ok()?;
    let mut text = String::new();
    f.read_to_string(&mut text).ok()?;
    text.lines()
        .find_map(|l| l.split("listening on ").nth(1))
        .map(|a| a.trim().to_string())
}
