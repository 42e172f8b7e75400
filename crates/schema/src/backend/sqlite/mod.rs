//! SQLite: opening a connection with the lab's policy, and what only its raw
//! handle can tell (the backend's [`crate::backend::Engine`]).
//!
//! # Why the lab keeps the raw handle
//!
//! diesel's `SqliteConnection` does not expose its `sqlite3*`, and its errors keep
//! only SQLite's message. To classify a lock failure, locklab needs the extended
//! result code of the failing call and a record of what the busy handler did
//! during the failing statement. So:
//!
//! 1. An `sqlite3_auto_extension` entry point, registered once per process, runs
//!    for every connection SQLite opens, on the opening thread, with the raw
//!    handle. It stores the handle in a thread-local slot.
//! 2. [`open`] clears the slot, calls `SqliteConnection::establish`, and
//!    takes the handle from the slot on the same thread. The handle is kept beside
//!    the diesel connection for the connection's whole life, so with a pool
//!    "the last handle opened on this thread" is never mistaken for the failing
//!    connection.
//! 3. On that handle the lab installs its own busy handler
//!    (`sqlite3_busy_handler`). Its timeout replaces `PRAGMA busy_timeout`, which
//!    must never be issued afterwards: it would remove the handler. The handler
//!    sleeps on SQLite's own schedule (1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50,
//!    100 ms...) and records whether it was called, how long it waited, and
//!    whether it gave up.
//! 4. An `SQLITE_TRACE_STMT` hook resets that record at the start of every
//!    statement, and an `SQLITE_TRACE_PROFILE` hook notes the moment a statement
//!    left the connection holding the write lock (the trace's "lock acquired").
//! 5. The entry points ([`crate::backend::LabConn::write_txn`],
//!    [`crate::backend::LabConn::autocommit`], [`crate::backend::LabConn::read`]) issue BEGIN/COMMIT/ROLLBACK themselves rather than use
//!    diesel's `transaction()`, which runs ROLLBACK before it returns the error and
//!    so overwrites the code. They read the code right after the failing call.
//!
//! The journal mode belongs to the file and is set once, by `locklab migrate`.

mod checkpoint;
mod engine;
mod hook;

pub use checkpoint::{spawn_checkpointer, start_checkpointer, Checkpoints, CHECKPOINT_EVERY};
pub(crate) use engine::pragma_text;
pub use engine::{open, SqliteEngine};
pub use hook::{busy_delay, process_lock_wait, sqlite_busy_delay, BusyRecord, StopFlag};
