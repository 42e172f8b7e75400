//! The soak's faults, injected into a running lab on a schedule: a SIGKILL of
//! a random daemon (the supervisor restarts it), a foreign process holding
//! the SQLite file's write lock ([`crate::hold`]), and a full disk.
//!
//! The full disk is RLIMIT_FSIZE set to 0 on every daemon for a while
//! (`prlimit(2)`, no privileges needed): no write may then extend any file,
//! as on a full file system, while writes inside a file's current size still
//! succeed. The daemons ignore SIGXFSZ, so the write fails with EFBIG and
//! SQLite returns SQLITE_IOERR (a real ENOSPC gives SQLITE_FULL; the fault
//! tests make one on a small tmpfs). Nothing here counts failures: the
//! daemons count what SQLite returned.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// When each fault fires.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    /// A SIGKILL of a random live daemon every this long (the first one
    /// after this long).
    pub kill_every: Duration,
    /// A foreign holder every this long, the first one `hold_first` in.
    pub hold_every: Duration,
    pub hold_first: Duration,
    pub hold_for: Duration,
    /// The one disk-full window: when, and how long.
    pub disk_full_at: Duration,
    pub disk_full_for: Duration,
    pub seed: u64,
}

impl FaultPlan {
    /// The soak's schedule for a load of `duration`: kills every 30 s, a hold
    /// of 8 s every minute from 15 s, and 10 s of full disk from 40 s. Each
    /// fires at least once from 60 s on; a shorter soak moves the disk-full
    /// window and the first hold earlier so that they still fit.
    pub fn soak(duration: Duration, seed: u64) -> FaultPlan {
        let disk_full_for = Duration::from_secs(10);
        let disk_full_at = Duration::from_secs(40)
            .min(duration.saturating_sub(disk_full_for + Duration::from_secs(5)));
        FaultPlan {
            kill_every: Duration::from_secs(30),
            hold_every: Duration::from_secs(60),
            hold_first: Duration::from_secs(15).min(duration / 4),
            hold_for: Duration::from_secs(8),
            disk_full_at,
            disk_full_for,
            seed,
        }
    }
}

/// One SIGKILL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kill {
    pub at_s: f64,
    pub daemon: String,
    pub pid: i32,
}

/// One foreign hold of the write lock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hold {
    pub at_s: f64,
    /// How long its BEGIN EXCLUSIVE waited for the lock (null if it failed).
    pub waited_s: Option<f64>,
    /// How long it held the lock (null if it failed).
    pub held_s: Option<f64>,
    /// Why it could not take the lock.
    pub error: Option<String>,
}

/// One disk-full window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskFull {
    pub at_s: f64,
    pub for_s: f64,
    /// The daemons limited (a daemon restarted inside the window is not).
    pub daemons: Vec<String>,
    /// Ones whose limit could not be set (they had just died).
    pub missed: Vec<String>,
}

/// Every fault injected, in report.json's `faults` (added field; absent
/// outside a soak).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultReport {
    pub seed: u64,
    pub kills: Vec<Kill>,
    pub holds: Vec<Hold>,
    pub disk_full: Vec<DiskFull>,
}

impl FaultReport {
    /// "3 kills, 1 foreign hold, 1 disk-full window".
    pub fn summary(&self) -> String {
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        format!(
            "{}, {}, {}",
            plural(self.kills.len(), "kill", "kills"),
            plural(self.holds.len(), "foreign hold", "foreign holds"),
            plural(
                self.disk_full.len(),
                "disk-full window",
                "disk-full windows"
            )
        )
    }
}

/// A daemon the injector may act on: its name and current PID.
pub struct Target {
    pub name: String,
    pub pid: i32,
}

/// The foreign holder: `locklab hold` as a process of its own (a lock held
/// by a thread of this process would be invisible to the witness, which
/// samples from here: POSIX locks never conflict with their own process).
struct RunningHold {
    at_s: f64,
    child: std::process::Child,
}

struct Limited {
    pid: i32,
    old: libc::rlimit,
}

/// Fires the plan's faults as the load's time passes ([`Injector::tick`]).
pub struct Injector {
    plan: FaultPlan,
    /// The SQLite file, for the holds (None on a server: no holds).
    db: Option<PathBuf>,
    rng: ChaCha8Rng,
    next_kill: Duration,
    next_hold: Duration,
    hold: Option<RunningHold>,
    disk_done: bool,
    limited: Option<(Duration, Vec<Limited>)>,
    report: FaultReport,
}

impl Injector {
    pub fn new(plan: FaultPlan, db: Option<PathBuf>) -> Injector {
        Injector {
            rng: ChaCha8Rng::seed_from_u64(plan.seed),
            next_kill: plan.kill_every,
            next_hold: plan.hold_first,
            report: FaultReport {
                seed: plan.seed,
                ..FaultReport::default()
            },
            plan,
            db,
            hold: None,
            disk_done: false,
            limited: None,
        }
    }

    /// Fires what is due at `elapsed` into the load, on the live daemons.
    pub fn tick(&mut self, elapsed: Duration, live: &[Target]) {
        let at_s = elapsed.as_secs_f64();
        if elapsed >= self.next_kill && !live.is_empty() {
            self.next_kill += self.plan.kill_every;
            let t = &live[self.rng.random_range(0..live.len())];
            // SAFETY: kill(2) with a PID we started; a PID that has exited
            // and not been reaped yet is still ours (the supervisor reaps).
            let r = unsafe { libc::kill(t.pid, libc::SIGKILL) };
            if r == 0 {
                eprintln!(
                    "locklab soak: fault: SIGKILL {} (pid {}) {at_s:.1} s in",
                    t.name, t.pid
                );
                self.report.kills.push(Kill {
                    at_s,
                    daemon: t.name.clone(),
                    pid: t.pid,
                });
            }
        }
        self.reap_hold();
        if elapsed >= self.next_hold && self.hold.is_none() {
            self.next_hold += self.plan.hold_every;
            if let Some(db) = self.db.clone() {
                eprintln!(
                    "locklab soak: fault: a foreign process takes the write lock (BEGIN EXCLUSIVE) \
                     for {} {at_s:.1} s in",
                    schema::settings::fmt_duration(self.plan.hold_for)
                );
                match spawn_holder(&db, self.plan.hold_for) {
                    Ok(child) => self.hold = Some(RunningHold { at_s, child }),
                    Err(e) => self.report.holds.push(Hold {
                        at_s,
                        waited_s: None,
                        held_s: None,
                        error: Some(format!("{e:#}")),
                    }),
                }
            }
        }
        if !self.disk_done && elapsed >= self.plan.disk_full_at {
            self.disk_done = true;
            let mut window = DiskFull {
                at_s,
                for_s: 0.0,
                daemons: Vec::new(),
                missed: Vec::new(),
            };
            let mut limited = Vec::new();
            for t in live {
                match set_file_size_limit(t.pid, 0) {
                    Ok(old) => {
                        window.daemons.push(t.name.clone());
                        limited.push(Limited { pid: t.pid, old });
                    }
                    Err(e) => {
                        eprintln!("locklab soak: cannot limit {} (pid {}): {e}", t.name, t.pid);
                        window.missed.push(t.name.clone());
                    }
                }
            }
            eprintln!(
                "locklab soak: fault: disk full (RLIMIT_FSIZE 0) for {} on {} {at_s:.1} s in",
                schema::settings::fmt_duration(self.plan.disk_full_for),
                window.daemons.join(", ")
            );
            self.report.disk_full.push(window);
            self.limited = Some((elapsed, limited));
        }
        if let Some((from, _)) = &self.limited {
            if elapsed >= *from + self.plan.disk_full_for {
                self.end_disk_full(elapsed);
            }
        }
    }

    fn end_disk_full(&mut self, elapsed: Duration) {
        let Some((from, limited)) = self.limited.take() else {
            return;
        };
        for l in &limited {
            // A daemon killed inside the window is gone: nothing to restore.
            let _ = restore_file_size_limit(l.pid, l.old);
        }
        let for_s = (elapsed - from).as_secs_f64();
        if let Some(w) = self.report.disk_full.last_mut() {
            w.for_s = for_s;
        }
        eprintln!("locklab soak: disk space is back after {for_s:.1} s");
    }

    fn reap_hold(&mut self) {
        let done = self
            .hold
            .as_mut()
            .is_some_and(|h| matches!(h.child.try_wait(), Ok(Some(_))));
        if done {
            self.join_hold();
        }
    }

    fn join_hold(&mut self) {
        let Some(h) = self.hold.take() else {
            return;
        };
        let record = match h.child.wait_with_output() {
            Ok(out) if out.status.success() => {
                let v: serde_json::Value =
                    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
                let (waited, held) = (v["waited_s"].as_f64(), v["held_s"].as_f64());
                eprintln!(
                    "locklab soak: the foreign holder released the lock after {:.1} s (it waited {:.1} s for it)",
                    held.unwrap_or(0.0),
                    waited.unwrap_or(0.0)
                );
                Hold {
                    at_s: h.at_s,
                    waited_s: waited,
                    held_s: held,
                    error: None,
                }
            }
            Ok(out) => {
                let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
                eprintln!("locklab soak: the foreign holder failed: {why}");
                Hold {
                    at_s: h.at_s,
                    waited_s: None,
                    held_s: None,
                    error: Some(why),
                }
            }
            Err(e) => Hold {
                at_s: h.at_s,
                waited_s: None,
                held_s: None,
                error: Some(e.to_string()),
            },
        };
        self.report.holds.push(record);
    }

    /// Ends every fault still on (the disk space comes back, the holder lets
    /// go) and returns what was injected.
    pub fn finish(mut self, elapsed: Duration) -> FaultReport {
        self.end_disk_full(elapsed);
        if let Some(h) = &self.hold {
            // SIGINT: the holder lets go early and still reports.
            if let Ok(pid) = i32::try_from(h.child.id()) {
                // SAFETY: kill(2) on our own child.
                unsafe {
                    libc::kill(pid, libc::SIGINT);
                }
            }
        }
        self.join_hold();
        self.report
    }
}

/// Starts `locklab hold` (this executable) on `db` for `hold_for`.
fn spawn_holder(db: &Path, hold_for: Duration) -> anyhow::Result<std::process::Child> {
    use anyhow::Context;
    let exe = std::env::current_exe().context("finding locklab's own executable")?;
    Command::new(exe)
        .args(["hold", "--json", "--timeout", "30s", "--for"])
        .arg(schema::settings::fmt_duration(hold_for))
        .arg("--database-url")
        .arg(db)
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting locklab hold")
}

/// Sets another process's RLIMIT_FSIZE soft limit, keeping its hard limit,
/// and returns the old limits.
fn set_file_size_limit(pid: i32, soft: u64) -> std::io::Result<libc::rlimit> {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reading the limits into a valid struct.
    if unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, std::ptr::null(), &mut old) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let new = libc::rlimit {
        rlim_cur: soft.min(old.rlim_max),
        rlim_max: old.rlim_max,
    };
    // SAFETY: both pointers are to valid structs.
    if unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &new, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(old)
}

fn restore_file_size_limit(pid: i32, old: libc::rlimit) -> std::io::Result<()> {
    // SAFETY: a pointer to a valid struct.
    if unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &old, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
