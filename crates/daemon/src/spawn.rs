//! Starting a daemon binary as a child process and waiting until it listens:
//! used by `locklab run` and by the end-to-end tests. The child is killed when
//! its handle is dropped, so an error or a failed test never leaves a daemon
//! behind. Its stderr (the log) is copied to a file line by line.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
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
    /// `within`. A thread of this process copies the daemon's stderr into
    /// the log, so a line lands a little after the effect it reports: under
    /// load, reading the log at once races that copy.
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
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", spec.bin.display()))?;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    let (tx, rx) = mpsc::channel::<String>();
    let log_path = spec.log.clone();
    let append = spec.append_log;
    std::thread::spawn(move || {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&log_path)
            .ok();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(f) = file.as_mut() {
                let _ = writeln!(f, "{line}");
                let _ = f.flush();
            }
            if let Some(addr) = line.split("listening on ").nth(1) {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    let name = spec.name.to_string();
    let last_lines = |path: &Path| {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    };
    let deadline = Instant::now() + spec.startup_timeout;
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(addr) => {
                return Ok(Child {
                    name,
                    child,
                    url: format!("http://{addr}"),
                    log: spec.log,
                })
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    bail!(
                        "{name} did not start listening within {:?}; see {}",
                        spec.startup_timeout,
                        spec.log.display()
                    );
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().context("waiting for the daemon")?;
                // the log thread has finished writing: the pipe closed
                bail!(
                    "{name} exited at startup ({status}):\n{}",
                    last_lines(&spec.log)
                );
            }
        }
    }
}
