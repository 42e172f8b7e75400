//! What a byte-range lock means to SQLite (unix VFS, `os_unix.c`).
//!
//! Database file (rollback journal, and the file-level locks of WAL mode):
//! - PENDING byte `0x40000000`: a READ lock on it for an instant while a
//!   reader takes SHARED; a WRITE lock while a writer that wants EXCLUSIVE
//!   waits for the readers to leave (and keeps it while EXCLUSIVE);
//! - RESERVED byte `0x40000001`: WRITE by the one connection that is writing
//!   (rollback journal; `BEGIN IMMEDIATE`, or the first write of a deferred
//!   transaction);
//! - SHARED range, 510 bytes from `0x40000002`: READ by every reader; WRITE by
//!   the EXCLUSIVE holder (a commit in progress, or `BEGIN EXCLUSIVE`).
//!
//! WAL index (`-shm`), from byte 120: 120 the write lock (the one writer of WAL
//! mode), 121 the checkpointer, 122 recovery, 123–127 the read marks (READ by
//! readers), 128 the "dead man switch" every connection holds READ.
//!
//! Locks are per process: the kernel merges a process's adjacent ranges of one
//! type, so `BEGIN EXCLUSIVE` shows as one WRITE range from PENDING to the end
//! of SHARED. Decoding therefore tests overlaps, never exact ranges.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::proclocks::{LockLine, LockType};

pub const PENDING_BYTE: u64 = 0x4000_0000;
pub const RESERVED_BYTE: u64 = PENDING_BYTE + 1;
pub const SHARED_FIRST: u64 = PENDING_BYTE + 2;
pub const SHARED_SIZE: u64 = 510;
pub const SHM_WRITE: u64 = 120;
pub const SHM_CHECKPOINT: u64 = 121;
pub const SHM_RECOVER: u64 = 122;
pub const SHM_READ_FIRST: u64 = 123;
pub const SHM_READ_MARKS: u64 = 5;

/// How a process holds SQLite's write lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WriteMode {
    /// WAL mode's write lock (`-shm` byte 120).
    WalWrite,
    /// Rollback journal: writing, readers still allowed.
    Reserved,
    /// Rollback journal: committing, waiting for the readers to leave.
    Pending,
    /// Rollback journal: committing with no reader left, or `BEGIN EXCLUSIVE`.
    Exclusive,
}

impl WriteMode {
    pub fn as_str(self) -> &'static str {
        match self {
            WriteMode::WalWrite => "WAL_WRITE",
            WriteMode::Reserved => "RESERVED",
            WriteMode::Pending => "PENDING",
            WriteMode::Exclusive => "EXCLUSIVE",
        }
    }
}

impl std::fmt::Display for WriteMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which file a lock is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Db,
    Shm,
}

/// What one process holds (or waits for) on the database, in one sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PidState {
    /// Its strongest write-lock mode, if it holds one.
    pub write: Option<WriteMode>,
    /// It reads: SHARED on the database, or a WAL read mark.
    pub reader: bool,
    /// It checkpoints (`-shm` byte 121).
    pub checkpointer: bool,
    /// It recovers the WAL index (`-shm` byte 122).
    pub recovering: bool,
    /// It is blocked in the kernel (`F_SETLKW`) on one of these bytes. SQLite
    /// itself never blocks there: it polls with `F_SETLK` and sleeps in its
    /// busy handler, which the OS cannot see.
    pub waiting: bool,
}

impl PidState {
    pub fn raise(&mut self, mode: WriteMode) {
        self.write = Some(self.write.map_or(mode, |m| m.max(mode)));
    }
}

/// The write mode a lock on the database file means, if any.
pub fn db_write_mode(l: &LockLine) -> Option<WriteMode> {
    if l.ltype != LockType::Write {
        return None;
    }
    if l.overlaps(SHARED_FIRST, SHARED_SIZE) {
        Some(WriteMode::Exclusive)
    } else if l.overlaps(PENDING_BYTE, 1) {
        Some(WriteMode::Pending)
    } else if l.overlaps(RESERVED_BYTE, 1) {
        Some(WriteMode::Reserved)
    } else {
        None
    }
}

/// Adds one lock line (already matched to the file `which`) to the per-PID
/// states.
pub fn add_line(states: &mut BTreeMap<i32, PidState>, which: Which, l: &LockLine) {
    let st = states.entry(l.pid).or_default();
    if l.blocked {
        let ours = match which {
            Which::Db => l.overlaps(PENDING_BYTE, 2 + SHARED_SIZE),
            Which::Shm => l.overlaps(SHM_WRITE, 3 + SHM_READ_MARKS),
        };
        st.waiting |= ours;
        return;
    }
    match which {
        Which::Db => {
            if let Some(mode) = db_write_mode(l) {
                st.raise(mode);
            } else if l.ltype == LockType::Read
                && (l.overlaps(SHARED_FIRST, SHARED_SIZE) || l.overlaps(PENDING_BYTE, 1))
            {
                st.reader = true;
            }
        }
        Which::Shm => match l.ltype {
            LockType::Write => {
                if l.overlaps(SHM_WRITE, 1) {
                    st.raise(WriteMode::WalWrite);
                }
                st.checkpointer |= l.overlaps(SHM_CHECKPOINT, 1);
                st.recovering |= l.overlaps(SHM_RECOVER, 1);
            }
            LockType::Read => {
                st.reader |= l.overlaps(SHM_READ_FIRST, SHM_READ_MARKS);
            }
        },
    }
}

/// The write mode an `F_GETLK` answer means: the conflicting lock's range and
/// type, on the database file or the `-shm`.
pub fn getlk_write_mode(which: Which, ltype: LockType, start: u64, len: u64) -> Option<WriteMode> {
    let end = if len == 0 {
        u64::MAX
    } else {
        start.saturating_add(len - 1)
    };
    let line = LockLine {
        kind: super::proclocks::LockKind::Posix,
        blocked: false,
        ltype,
        pid: 0,
        major: 0,
        minor: 0,
        inode: 0,
        start,
        end,
    };
    match which {
        Which::Db => db_write_mode(&line),
        Which::Shm => {
            (ltype == LockType::Write && line.overlaps(SHM_WRITE, 1)).then_some(WriteMode::WalWrite)
        }
    }
}
