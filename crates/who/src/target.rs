//! The watched files: the database and its `-shm`, identified by device and
//! inode, checked without SQLite, and probed with `F_GETLK` on a read-only
//! descriptor.
//!
//! # POSIX locks and closing descriptors
//!
//! Closing *any* descriptor of a file drops *every* POSIX lock the closing
//! process holds on that file. `who` holds no lock itself, so closing its
//! probes changes nothing for other processes; but a program that embeds the
//! [`super::Sampler`] and also has SQLite connections open on the same file
//! must stop the sampler only while those connections hold no transaction
//! (`locklab run` stops it after the drain). A probe whose file was replaced
//! (new inode) is closed at once: that only concerns the old inode.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::bail;

use super::proclocks::LockType;

/// SQLite's 16-byte file header.
pub const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// A file's identity: what `/proc/locks` names it by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub major: u32,
    pub minor: u32,
    pub inode: u64,
}

impl FileId {
    pub fn of(path: &Path) -> std::io::Result<FileId> {
        let md = std::fs::metadata(path)?;
        Ok(FileId {
            major: libc::major(md.dev()),
            minor: libc::minor(md.dev()),
            inode: md.ino(),
        })
    }

    pub fn device(&self) -> String {
        format!("{:02x}:{:02x}", self.major, self.minor)
    }
}

/// The path of the WAL index beside a database.
pub fn shm_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_os_string();
    s.push("-shm");
    PathBuf::from(s)
}

/// Checks that `path` is an SQLite database by reading its header (no SQLite,
/// no lock). Returns a note for an empty file, which SQLite treats as a new
/// database.
pub fn check_database(path: &Path) -> anyhow::Result<Option<String>> {
    let md = match std::fs::metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{} does not exist; give the path of the database file your application opens \
             (Django: DATABASES['default']['NAME'])",
            path.display()
        ),
        Err(e) => bail!("cannot read {}: {e}", path.display()),
    };
    if !md.is_file() {
        bail!(
            "{} is not a regular file; give the SQLite database file itself",
            path.display()
        );
    }
    let mut head = Vec::with_capacity(16);
    File::open(path)
        .and_then(|f| f.take(16).read_to_end(&mut head))
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot read {}: {e}; run as a user who may read the database (or as its owner)",
                path.display()
            )
        })?;
    if head.is_empty() {
        return Ok(Some(format!(
            "{} is empty: SQLite treats it as a new database; nobody has written to it yet",
            path.display()
        )));
    }
    if head.as_slice() != SQLITE_HEADER {
        bail!(
            "{} is not an SQLite database: its first 16 bytes are not \"SQLite format 3\\0\"; \
             give the database file (not its -journal, -wal or -shm)",
            path.display()
        );
    }
    Ok(None)
}

/// What `F_GETLK` found: the first lock that conflicts with the tested one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conflict {
    pub ltype: LockType,
    /// The holder's PID in this PID namespace; 0 when it is not visible here.
    pub pid: i32,
    pub start: u64,
    /// 0 means "to the end of the file".
    pub len: u64,
}

/// A read-only descriptor on a watched file, for `F_GETLK`.
#[derive(Debug)]
pub struct Probe {
    file: File,
    pub id: FileId,
}

impl Probe {
    /// Opens `path` with `O_RDONLY` (never for writing, never creating).
    pub fn open(path: &Path) -> std::io::Result<Probe> {
        let file = File::open(path)?;
        let md = file.metadata()?;
        Ok(Probe {
            id: FileId {
                major: libc::major(md.dev()),
                minor: libc::minor(md.dev()),
                inode: md.ino(),
            },
            file,
        })
    }

    /// Asks the kernel whether a lock of type `test` on `start..start+len`
    /// would conflict with one held by another process, and by whom. It takes
    /// nothing: F_GETLK only tests. Testing a READ lock finds writers only;
    /// testing a WRITE lock finds readers too. On a read-only descriptor Linux
    /// allows both tests (only F_SETLK needs the matching access mode).
    pub fn getlk(&self, test: LockType, start: u64, len: u64) -> std::io::Result<Option<Conflict>> {
        let l_type = match test {
            LockType::Read => libc::F_RDLCK,
            LockType::Write => libc::F_WRLCK,
        };
        // SAFETY: `flock` is a plain C struct for which all-zero bytes are a
        // valid value; fcntl(F_GETLK) reads and overwrites only this struct,
        // on a descriptor this Probe owns and keeps open for the call.
        let (rc, fl) = unsafe {
            let mut fl: libc::flock = std::mem::zeroed();
            fl.l_type = l_type as libc::c_short;
            fl.l_whence = libc::SEEK_SET as libc::c_short;
            fl.l_start = start as libc::off_t;
            fl.l_len = len as libc::off_t;
            let rc = libc::fcntl(self.file.as_raw_fd(), libc::F_GETLK, &mut fl);
            (rc, fl)
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if i32::from(fl.l_type) == libc::F_UNLCK {
            return Ok(None);
        }
        Ok(Some(Conflict {
            ltype: if i32::from(fl.l_type) == libc::F_WRLCK {
                LockType::Write
            } else {
                LockType::Read
            },
            pid: fl.l_pid,
            start: u64::try_from(fl.l_start).unwrap_or(0),
            len: u64::try_from(fl.l_len).unwrap_or(0),
        }))
    }
}

/// `/proc/locks`, kept open and re-read from the start at each sample.
#[derive(Debug)]
pub struct ProcLocks {
    file: File,
    pub buf: Vec<u8>,
}

pub const PROC_LOCKS: &str = "/proc/locks";

impl ProcLocks {
    pub fn open() -> std::io::Result<ProcLocks> {
        Ok(ProcLocks {
            file: File::open(PROC_LOCKS)?,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    /// Reads the whole list again.
    pub fn read(&mut self) -> std::io::Result<&str> {
        use std::io::{Seek, SeekFrom};
        self.buf.clear();
        self.file.seek(SeekFrom::Start(0))?;
        self.file.read_to_end(&mut self.buf)?;
        std::str::from_utf8(&self.buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}
