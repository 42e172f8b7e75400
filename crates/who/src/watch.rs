//! One sample of the locks on a database and its `-shm`: `/proc/locks`
//! matched by device and inode, and `F_GETLK` to catch holders `/proc/locks`
//! cannot show.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::decode::{
    add_line, getlk_write_mode, PidState, Which, WriteMode, PENDING_BYTE, SHARED_SIZE, SHM_WRITE,
};
use super::proclocks::{parse_line, LockLine, LockType};
use super::target::{check_database, shm_path, FileId, Probe, ProcLocks, PROC_LOCKS};

/// Where a sample comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeMode {
    /// `fcntl(F_GETLK)` on the watched files only: per-file, takes no lock in
    /// the kernel beyond the file's own; sees the writer, not the readers.
    Getlk,
    /// `/proc/locks` (every holder, readers and blocked waiters too), with
    /// F_GETLK for holders it cannot show. Each read of `/proc/locks` takes the
    /// kernel's global file-lock semaphore for writing, which stalls every
    /// `fcntl` lock call on the machine meanwhile.
    Proc,
}

impl ProbeMode {
    pub fn parse(s: &str) -> Result<ProbeMode, String> {
        match s.trim() {
            "getlk" => Ok(ProbeMode::Getlk),
            "proc" => Ok(ProbeMode::Proc),
            other => Err(format!("unknown probe {other:?}: use getlk or proc")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProbeMode::Getlk => "F_GETLK",
            ProbeMode::Proc => "/proc/locks + F_GETLK",
        }
    }
}

/// How often the files are looked up again (a `-shm` appears when the first
/// WAL connection opens, and is deleted by the last one).
const REFRESH: Duration = Duration::from_millis(250);

/// What one sample saw, per PID.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub states: BTreeMap<i32, PidState>,
}

impl Sample {
    /// The PIDs holding the write lock, with their strongest mode.
    pub fn writers(&self) -> BTreeMap<i32, WriteMode> {
        self.states
            .iter()
            .filter_map(|(pid, s)| s.write.map(|m| (*pid, m)))
            .collect()
    }

    /// The PIDs blocked in the kernel on one of the lock bytes.
    pub fn waiting(&self) -> Vec<i32> {
        self.states
            .iter()
            .filter(|(_, s)| s.waiting)
            .map(|(pid, _)| *pid)
            .collect()
    }

    /// The PIDs that read (SHARED or a WAL read mark) and do not write (a
    /// writer holds its own SHARED too).
    pub fn readers(&self) -> Vec<i32> {
        self.states
            .iter()
            .filter(|(_, s)| s.reader && s.write.is_none())
            .map(|(pid, _)| *pid)
            .collect()
    }
}

/// One watched file: its probe and whether `/proc/locks` ever named it by
/// `stat`'s own device.
#[derive(Debug)]
struct Watched {
    path: PathBuf,
    which: Which,
    probe: Probe,
    exact_seen: bool,
}

impl Watched {
    fn open(path: &Path, which: Which) -> std::io::Result<Watched> {
        Ok(Watched {
            path: path.to_path_buf(),
            which,
            probe: Probe::open(path)?,
            exact_seen: false,
        })
    }

    /// Whether a `/proc/locks` line is about this file: same inode and
    /// device; or, until the device has been seen to match, the same inode on
    /// another device (overlayfs and btrfs subvolumes report a device in
    /// `stat` other than the one locks are filed under).
    fn matches(&mut self, l: &LockLine) -> Match {
        let id = self.probe.id;
        if l.inode != id.inode {
            return Match::No;
        }
        if (l.major, l.minor) == (id.major, id.minor) {
            self.exact_seen = true;
            return Match::Exact;
        }
        if self.exact_seen {
            Match::No
        } else {
            Match::InodeOnly
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Match {
    No,
    Exact,
    InodeOnly,
}

/// The sampler's view of one database: its files, `/proc/locks`, and the
/// warnings met so far (each said once).
#[derive(Debug)]
pub struct Watch {
    pub db_path: PathBuf,
    db: Watched,
    shm: Option<Watched>,
    proc_locks: Option<ProcLocks>,
    pub warnings: Vec<String>,
    said: Vec<&'static str>,
    last_refresh: Instant,
    /// Whether a `-shm` was ever seen (the database was in WAL mode).
    pub shm_seen: bool,
    /// Notes about the file itself (e.g. it is empty).
    pub notes: Vec<String>,
    pub mode: ProbeMode,
}

impl Watch {
    /// Checks the file (exists, is SQLite: read from its header, never through
    /// SQLite) and opens the probes and `/proc/locks`.
    pub fn open(path: &Path, mode: ProbeMode) -> anyhow::Result<Watch> {
        let note = check_database(path)?;
        let db = Watched::open(path, Which::Db)
            .with_context(|| format!("cannot open {} read-only", path.display()))?;
        let mut w = Watch {
            db_path: path.to_path_buf(),
            db,
            shm: None,
            proc_locks: None,
            warnings: Vec::new(),
            said: Vec::new(),
            last_refresh: Instant::now(),
            shm_seen: false,
            notes: note.into_iter().collect(),
            mode,
        };
        if mode == ProbeMode::Proc {
            match ProcLocks::open() {
                Ok(p) => w.proc_locks = Some(p),
                Err(e) => {
                    w.mode = ProbeMode::Getlk;
                    w.warn(
                        "no-proc-locks",
                        format!(
                            "cannot read {PROC_LOCKS} ({e}): falling back to F_GETLK alone, which \
                             sees the writer but no readers; --probe proc needs Linux with /proc \
                             mounted"
                        ),
                    )
                }
            }
        }
        w.open_shm();
        Ok(w)
    }

    fn warn(&mut self, key: &'static str, message: String) {
        if !self.said.contains(&key) {
            self.said.push(key);
            self.warnings.push(message);
        }
    }

    fn open_shm(&mut self) {
        let path = shm_path(&self.db_path);
        match Watched::open(&path, Which::Shm) {
            Ok(w) => {
                self.shm = Some(w);
                self.shm_seen = true;
            }
            Err(_) => self.shm = None,
        }
    }

    /// Looks the files up again: a replaced database, or a `-shm` that
    /// appeared or went away.
    fn refresh(&mut self) {
        self.last_refresh = Instant::now();
        if let Ok(id) = FileId::of(&self.db_path) {
            if id != self.db.probe.id {
                if let Ok(w) = Watched::open(&self.db_path, Which::Db) {
                    self.db = w;
                    self.warn(
                        "db-replaced",
                        format!(
                            "{} was replaced by a new file (inode {}); watching the new one",
                            self.db_path.display(),
                            id.inode
                        ),
                    );
                }
            }
        }
        let shm = shm_path(&self.db_path);
        let now = FileId::of(&shm).ok();
        let have = self.shm.as_ref().map(|w| w.probe.id);
        if now != have {
            self.open_shm();
        }
    }

    /// Takes one sample. Never fails: a read error becomes a warning and the
    /// sampler goes on with what it can still see.
    pub fn sample(&mut self) -> Sample {
        if self.last_refresh.elapsed() >= REFRESH {
            self.refresh();
        }
        let mut sample = Sample::default();
        let mut inode_only: Option<(LockLine, Which)> = None;
        let mut read_error = None;
        if let Some(pl) = self.proc_locks.as_mut() {
            match pl.read() {
                Ok(text) => {
                    for l in text.lines().filter_map(parse_line) {
                        for w in std::iter::once(&mut self.db).chain(self.shm.as_mut()) {
                            match w.matches(&l) {
                                Match::No => continue,
                                Match::InodeOnly => {
                                    inode_only.get_or_insert((l, w.which));
                                }
                                Match::Exact => {}
                            }
                            add_line(&mut sample.states, w.which, &l);
                        }
                    }
                }
                Err(e) => read_error = Some(e),
            }
        }
        if let Some(e) = read_error {
            self.proc_locks = None;
            self.mode = ProbeMode::Getlk;
            self.warn(
                "proc-locks-failed",
                format!("reading {PROC_LOCKS} failed ({e}): going on with F_GETLK alone"),
            );
        }
        if let Some((l, which)) = inode_only {
            self.warn_inode_only(&l, which);
        }
        if !sample.states.values().any(|s| s.write.is_some()) {
            self.getlk_writers(&mut sample);
        }
        sample
    }

    /// The `F_GETLK` probe: testing a READ lock over the database's lock bytes
    /// and over the `-shm` write byte finds a writer, with its PID as this PID
    /// namespace sees it (0 when it cannot).
    fn getlk_writers(&mut self, sample: &mut Sample) {
        let mut errors = Vec::new();
        for w in std::iter::once(&self.db).chain(self.shm.as_ref()) {
            let (start, len) = match w.which {
                Which::Db => (PENDING_BYTE, 2 + SHARED_SIZE),
                Which::Shm => (SHM_WRITE, 1),
            };
            match w.probe.getlk(LockType::Read, start, len) {
                Ok(Some(c)) => {
                    if let Some(mode) = getlk_write_mode(w.which, c.ltype, c.start, c.len) {
                        sample.states.entry(c.pid).or_default().raise(mode);
                    }
                }
                Ok(None) => {}
                Err(e) => errors.push(format!("F_GETLK on {} failed: {e}", w.path.display())),
            }
        }
        for e in errors {
            self.warn("getlk-failed", e);
        }
        if sample.states.get(&0).is_some_and(|s| s.write.is_some()) {
            self.warn(
                "unseen-holder",
                format!(
                    "a process this PID namespace cannot see holds the write lock on {}: F_GETLK \
                     answers pid 0 (and {PROC_LOCKS} leaves such locks out). Run locklab who where \
                     that process is visible: on the host, or in a container started with --pid \
                     host (compose: pid: host); its holds are counted under pid 0 meanwhile",
                    self.db_path.display()
                ),
            );
        }
    }

    fn warn_inode_only(&mut self, l: &LockLine, which: Which) {
        let w = match which {
            Which::Db => &self.db,
            Which::Shm => match &self.shm {
                Some(w) => w,
                None => return,
            },
        };
        let confirmed = w
            .probe
            .getlk(LockType::Write, l.start, l.end.saturating_sub(l.start) + 1)
            .ok()
            .flatten()
            .is_some_and(|c| c.pid == l.pid);
        let message = format!(
            "{PROC_LOCKS} files {} under device {:02x}:{:02x}, stat says {} (overlayfs and btrfs \
             subvolumes do this): matching by inode {} alone{}",
            w.path.display(),
            l.major,
            l.minor,
            w.probe.id.device(),
            l.inode,
            if confirmed {
                "; F_GETLK on the file confirmed the holder"
            } else {
                "; F_GETLK could not confirm it, so a file with the same inode number on another \
                 file system could be mistaken for it"
            }
        );
        self.warn("inode-only", message);
    }
}
