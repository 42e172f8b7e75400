//! `toaster`: Toaster's patched `Model.save` (lib/toaster/orm/models.py). A save
//! whose error says `database is locked` is logged, slept on for 0.5 s and
//! tried again, forever, where it was called: inside an open transaction the
//! retry is a new savepoint and the transaction stays open. Reads, queryset
//! updates, bulk inserts and commits are not retried.

use super::{Call, Failure};
use crate::error::LockClass;
use std::time::Duration;

/// Toaster's patched save sleeps this long between tries.
pub const TOASTER_RETRY_SLEEP: Duration = Duration::from_millis(500);

pub fn pause(f: &Failure) -> Option<Duration> {
    // Toaster matches the message "database is locked", which SQLite gives
    // for SQLITE_BUSY and all its extended codes (SQLITE_LOCKED reads "database
    // table is locked").
    let locked = matches!(
        f.class,
        LockClass::BusyUpgrade | LockClass::BusySnapshot | LockClass::BusyTimeout
    );
    (f.call == Call::Save && locked).then_some(TOASTER_RETRY_SLEEP)
}
