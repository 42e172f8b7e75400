//! Parsing `/proc/locks`, Linux's list of every file lock on the machine (in the
//! reader's PID namespace).
//!
//! A line, as `fs/locks.c` prints it:
//!
//! ```text
//! 3: POSIX  ADVISORY  WRITE 13315 fe:00:10010833 1073741825 1073741825
//! 4: -> POSIX  ADVISORY  WRITE 13320 fe:00:10010833 1073741825 1073741825
//! 7: OFDLCK ADVISORY  READ -1 00:06:3 0 EOF
//! ```
//!
//! id, an arrow for a waiter blocked in `F_SETLKW` behind the line above it,
//! the lock's kind, ADVISORY (or MANDATORY on old kernels), READ or WRITE, the
//! owner's PID (-1 for OFD locks, which belong to an open file, not a process),
//! the device as hex `major:minor` of the file system's superblock, the inode
//! number, and the first and last byte (EOF: to the end of the file).
//!
//! The parser looks for the `maj:min:inode` token and reads its neighbours, so
//! the padding (which changed between kernels) does not matter.

/// READ or WRITE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockType {
    Read,
    Write,
}

/// Who owns the lock: a process (POSIX), an open file (OFD), or a whole-file
/// `flock`. SQLite's unix VFS uses POSIX locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    Posix,
    Ofd,
    Flock,
    Other,
}

/// One lock (or one blocked waiter) from `/proc/locks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockLine {
    pub kind: LockKind,
    /// A `->` line: a process blocked in the kernel waiting for this range.
    pub blocked: bool,
    pub ltype: LockType,
    pub pid: i32,
    pub major: u32,
    pub minor: u32,
    pub inode: u64,
    pub start: u64,
    /// Last byte, inclusive; `u64::MAX` for EOF.
    pub end: u64,
}

impl LockLine {
    /// Whether the lock covers any byte of `first..first + len`.
    pub fn overlaps(&self, first: u64, len: u64) -> bool {
        let last = first.saturating_add(len.saturating_sub(1));
        self.start <= last && self.end >= first
    }
}

/// Parses `maj:min:inode` (major and minor in hex, inode in decimal).
fn parse_dev_inode(token: &str) -> Option<(u32, u32, u64)> {
    let mut parts = token.split(':');
    let major = u32::from_str_radix(parts.next()?, 16).ok()?;
    let minor = u32::from_str_radix(parts.next()?, 16).ok()?;
    let inode = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some((major, minor, inode))
}

/// Parses one line; None for lines that are not byte-range locks on an inode
/// (leases, `<none>` inodes, UNLCK, anything unexpected).
pub fn parse_line(line: &str) -> Option<LockLine> {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let at = tokens.iter().position(|t| t.matches(':').count() == 2)?;
    let (major, minor, inode) = parse_dev_inode(tokens[at])?;
    if at < 2 {
        return None;
    }
    let pid: i32 = tokens[at - 1].parse().ok()?;
    let ltype = match tokens[at - 2] {
        "WRITE" => LockType::Write,
        "READ" => LockType::Read,
        _ => return None,
    };
    let start: u64 = tokens.get(at + 1)?.parse().ok()?;
    let end: u64 = match *tokens.get(at + 2)? {
        "EOF" => u64::MAX,
        n => n.parse().ok()?,
    };
    let blocked = tokens.get(1) == Some(&"->");
    let kind_token = tokens.get(if blocked { 2 } else { 1 })?;
    let kind = match *kind_token {
        "POSIX" => LockKind::Posix,
        "OFDLCK" => LockKind::Ofd,
        "FLOCK" => LockKind::Flock,
        _ => LockKind::Other,
    };
    Some(LockLine {
        kind,
        blocked,
        ltype,
        pid,
        major,
        minor,
        inode,
        start,
        end,
    })
}

/// The lines of `text` whose inode is one of `inodes`.
pub fn lines_for<'a>(text: &'a str, inodes: &'a [u64]) -> impl Iterator<Item = LockLine> + 'a {
    text.lines()
        .filter_map(parse_line)
        .filter(move |l| inodes.contains(&l.inode))
}
