//! Which process holds SQLite's lock, seen from the operating system, for
//! any program that uses the database file: the sampler behind `locklab who`,
//! `locklab run`'s witness and webui's dashboard.
//!
//! SQLite cannot say who holds its lock. On Linux (unix VFS) its locks are
//! POSIX byte-range locks, and the kernel knows their owners:
//! - `/proc/locks` lists every lock with its PID, device and inode
//!   ([`proclocks`]); the bytes tell the mode ([`decode`]);
//! - `fcntl(F_GETLK)` on a read-only descriptor answers with the PID of a
//!   conflicting holder, and with PID 0 when that holder lives in another PID
//!   namespace, where `/proc/locks` leaves it out ([`target`]).
//!
//! The sampler never opens an SQLite connection and never takes a lock, so it
//! cannot add to the contention it measures. It samples both sources every
//! interval on its own thread ([`Sampler`]), tracks each PID's holds of the
//! write lock (RESERVED, PENDING, EXCLUSIVE, or WAL's write lock), and reports
//! per PID: total, longest, count and share ([`WhoReport`]). A hold seen in a
//! single sample is counted, not timed: the resolution is the sampling gap,
//! which the report states together with the rate really achieved.
//!
//! Waiters: SQLite never blocks in the kernel (it polls with `F_SETLK` and
//! sleeps in its busy handler), so a waiting SQLite connection is invisible
//! to the OS. Only programs that block in `F_SETLKW` show as waiters. A writer
//! holding PENDING is one that waits, for the readers to leave.
//!
//! `locklab run` embeds the sampler as an independent witness
//! (`locklab::who::witness`): the OS-observed hold time of each daemon beside its own
//! trace, and any foreign holder named.

pub mod decode;
pub mod procinfo;
pub mod proclocks;
pub mod sampler;
pub mod target;
pub mod watch;

pub use decode::WriteMode;
pub use sampler::{
    snapshot, Hold, HolderStats, LiveEvent, Party, Sampler, SamplerOptions, WhoReport,
};
pub use watch::ProbeMode;
