//! Retry policies (`LAB_RETRY`): what happens after a failed attempt. Each
//! policy is one small function of the attempt, the failure's class and the
//! time spent; [`pause`] picks it.
//!
//! What a policy may retry depends on what failed ([`Call`]). Toaster's
//! patched save retries saves only: its reads, queryset updates, bulk inserts
//! and the COMMIT of an outer block are not retried (toaster-facts.md).

mod backoff;
mod none;
mod toaster;

use std::time::Duration;

use crate::error::LockClass;
use crate::settings::RetryPolicy;

pub use backoff::backoff_pause;
pub use toaster::TOASTER_RETRY_SLEEP;

/// What kind of call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// A model save: an atomic block (a transaction, or a savepoint inside an
    /// open one) retried as a unit.
    Save,
    /// Reads outside any write.
    Read,
    /// A statement that no policy retries: a queryset update or delete, a bulk
    /// insert, the COMMIT of an outer block or of a sync.
    Statement,
}

/// The facts a policy decides on.
#[derive(Debug, Clone, Copy)]
pub struct Failure {
    pub class: LockClass,
    /// 1 for the first failed attempt of the operation.
    pub attempt: u32,
    /// Time since the operation started.
    pub spent: Duration,
    pub call: Call,
    /// SQLITE_FULL or SQLITE_IOERR ([`crate::error::DbError::is_disk`]):
    /// only `backoff` retries it, within its deadline.
    pub disk: bool,
}

/// How long to pause before trying again, or None to give up.
pub fn pause(policy: RetryPolicy, deadline: Duration, f: &Failure) -> Option<Duration> {
    if f.disk {
        // A full disk or an I/O error rolled the write back: a bounded retry
        // loses nothing if space comes back in time; an unbounded one (or
        // none) is not what the other policies do.
        return match (policy, f.call) {
            (RetryPolicy::Backoff, Call::Save | Call::Read) => backoff::pause(f, deadline),
            _ => None,
        };
    }
    if !f.class.is_transient() || f.call == Call::Statement {
        return None;
    }
    match policy {
        RetryPolicy::None => none::pause(f),
        RetryPolicy::Toaster => toaster::pause(f),
        RetryPolicy::Backoff => backoff::pause(f, deadline),
    }
}
