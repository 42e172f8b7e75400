//! locklab's shared core: everything that touches the database lives here.
//!
//! - [`schema`] and [`models`]: the Toaster-shaped tables, their types and every
//!   query, as named operations (`BuildRequest::create`, `Booking::book_all`...).
//!   No other crate writes SQL or names a diesel table.
//! - [`migrate`]: the embedded migrations, `locklab migrate`'s work, and the
//!   daemons' read-only startup check.
//! - [`db`]: the one place connections are opened, with the lab's own busy
//!   handler, and the write-transaction entry point.
//! - [`error`]: lock-error classes recovered from SQLite's real codes.
//! - [`ops`]: operations, their transactions, and how failures are counted.
//! - [`strategy`]: the claim strategies, commit policies and retry policies,
//!   one file each.
//! - [`settings`]: knobs, presets and the precedence of their sources.
//! - [`stats`] and [`trace`]: per-process statistics and the lock trace.
//! - [`stream`]: the deterministic build-event stream regenerated from a seed.
//!
//! Crates chosen: diesel (required) with a custom r2d2 manager; libsqlite3-sys
//! for the raw handle the classification needs (bundled, so every machine runs
//! the same SQLite); hdrhistogram for latency quantiles; rand_chacha for a
//! stream that is the same on every platform and version.

pub mod backend;
pub mod db;
pub mod error;
pub mod migrate;
pub mod models;
pub mod ops;
pub mod schema;
pub mod settings;
pub mod stats;
pub mod strategy;
pub mod stream;
pub mod trace;
pub mod types;

pub use db::{DbTarget, LabConn, Policy, Pool};
pub use error::{DbError, LockClass, OpError, ServerCode, TxError};
pub use ops::Lab;
pub use types::*;

/// SQLite's version, as linked into this binary.
pub fn sqlite_version() -> String {
    // SAFETY: sqlite3_libversion returns a static NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(libsqlite3_sys::sqlite3_libversion()) }
        .to_string_lossy()
        .into_owned()
}
