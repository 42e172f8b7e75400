//! Waking runbuilds, as Toaster does (`signal_runbuilds()` in
//! `orm/models.py`): runbuilds writes its PID to a pidfile, and webui (after
//! each create) and buildinfohelper (at the end of each build) send it
//! SIGUSR1. Where they do not share a PID namespace (compose: every daemon is
//! PID 1 of its own container) a PID in the pidfile means nothing, so the
//! pidfile also records the PID namespace it was written in, and a notifier
//! in another namespace uses `POST /wake` on `LAB_WAKE_URLS` instead.
//!
//! The pidfile is `LAB_PIDFILE`, or `.<name>.pid` beside the database (Toaster
//! writes `.runbuilds.pid` into its build directory).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// This process's PID namespace, as `/proc/self/ns/pid` names it
/// (`pid:[4026531836]`), or "" where it cannot be read.
pub fn pid_namespace() -> String {
    std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The default pidfile of a runbuilds named `name`, in `dir`: the folder of
/// the SQLite file (or the current folder for a server database).
pub fn default_pidfile(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.pid"))
}

/// Writes the pidfile: our PID and our PID namespace. Install the SIGUSR1
/// handler before calling this, or an early signal would kill the process.
pub fn write_pidfile(path: &Path) -> std::io::Result<()> {
    let tmp = path.with_extension("pid.tmp");
    std::fs::write(
        &tmp,
        format!("{}\n{}\n", std::process::id(), pid_namespace()),
    )?;
    std::fs::rename(&tmp, path)
}

/// Removes the pidfile if it still names this process.
pub fn remove_pidfile(path: &Path) {
    if let Ok(text) = std::fs::read_to_string(path) {
        if text.lines().next() == Some(&std::process::id().to_string()) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Sends runbuilds its wake-up.
#[derive(Debug)]
pub struct Notifier {
    /// The pidfiles to read: `LAB_PIDFILE`, or every `.runbuilds*.pid` beside
    /// the database.
    pidfile: Option<PathBuf>,
    dir: PathBuf,
    urls: Vec<String>,
    agent: ureq::Agent,
    namespace: String,
    warned: AtomicBool,
    name: String,
}

impl Notifier {
    /// `dir`: where runbuilds' default pidfiles are (see [`default_pidfile`]).
    pub fn new(name: &str, dir: &Path, pidfile: Option<PathBuf>, urls: Vec<String>) -> Notifier {
        let dir = dir.to_path_buf();
        Notifier {
            pidfile,
            dir,
            urls,
            agent: ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(2)))
                .http_status_as_error(false)
                .build()
                .into(),
            namespace: pid_namespace(),
            warned: AtomicBool::new(false),
            name: name.to_string(),
        }
    }

    fn pidfiles(&self) -> Vec<PathBuf> {
        if let Some(p) = &self.pidfile {
            return vec![p.clone()];
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy())
                    .is_some_and(|n| n.starts_with(".runbuilds") && n.ends_with(".pid"))
            })
            .collect();
        found.sort();
        found
    }

    /// SIGUSR1 to every runbuilds whose pidfile was written in our PID
    /// namespace and whose PID is alive; else POST /wake to every URL. Returns
    /// how many were woken.
    pub fn notify(&self) -> usize {
        let mut woken = 0;
        for path in self.pidfiles() {
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let mut lines = text.lines();
            let pid = lines.next().and_then(|l| l.trim().parse::<i32>().ok());
            let ns = lines.next().unwrap_or("").trim();
            // A PID from another namespace names some other process here.
            let Some(pid) = pid.filter(|p| *p > 0) else {
                continue;
            };
            if ns.is_empty() || ns != self.namespace {
                continue;
            }
            // SAFETY: kill(2) with a PID read from runbuilds' pidfile, written
            // in our own PID namespace.
            if unsafe { libc::kill(pid, libc::SIGUSR1) } == 0 {
                woken += 1;
            }
        }
        if woken > 0 {
            return woken;
        }
        for url in &self.urls {
            let wake = format!("{}/wake", url.trim_end_matches('/'));
            match self.agent.post(&wake).send_empty() {
                Ok(r) if r.status().is_success() => woken += 1,
                Ok(r) => self.warn_once(&format!("POST {wake} answered {}", r.status())),
                Err(e) => self.warn_once(&format!("POST {wake}: {e}")),
            }
        }
        if woken == 0 && self.urls.is_empty() {
            self.warn_once(&format!(
                "no runbuilds pidfile in our PID namespace under {} and no LAB_WAKE_URLS",
                self.dir.display()
            ));
        }
        woken
    }

    fn warn_once(&self, what: &str) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            log::warn!(
                "{}: cannot wake runbuilds: {what} (further failures are not logged)",
                self.name
            );
        }
    }
}
