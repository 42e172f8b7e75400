//! `locklab hold`: another process takes an SQLite file's write lock
//! (`BEGIN EXCLUSIVE`) and keeps it for a while, then rolls back. It is the
//! foreign lock holder of the soak and of the fault tests, and a way for a
//! user to see what their own processes do when something else (a backup, a
//! migration, a `sqlite3` shell left in a transaction) holds the lock longer
//! than their busy timeout.
//!
//! Under the rollback journal, `BEGIN EXCLUSIVE` keeps readers out too; under
//! WAL it is the write lock only, and readers go on.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};

/// What a hold did.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    /// How long `BEGIN EXCLUSIVE` waited for the lock.
    pub waited: Duration,
    /// How long the lock was held.
    pub held: Duration,
}

/// Refuses a path that is not an existing SQLite file: hold never creates one.
pub fn check_file(path: &Path) -> anyhow::Result<()> {
    if !path.is_file() {
        bail!(
            "{} does not exist (hold takes an existing SQLite file)",
            path.display()
        );
    }
    if !schema::migrate::has_sqlite_header(path) {
        bail!("{} is not an SQLite database", path.display());
    }
    Ok(())
}

/// Takes the write lock of the SQLite file at `path`, waiting up to
/// `acquire_within` for it (SQLite's busy timeout), keeps it for `hold_for`
/// (less if `stop` is set), then rolls back. Nothing is written.
/// `on_acquired` runs once the lock is held, with how long it took.
pub fn hold_write_lock(
    path: &Path,
    hold_for: Duration,
    acquire_within: Duration,
    stop: &AtomicBool,
    on_acquired: impl FnOnce(Duration),
) -> anyhow::Result<Held> {
    check_file(path)?;
    let text = path
        .to_str()
        .with_context(|| format!("{} is not valid UTF-8", path.display()))?;
    let mut conn = SqliteConnection::establish(text)
        .with_context(|| format!("cannot open {}", path.display()))?;
    conn.batch_execute(&format!(
        "PRAGMA busy_timeout = {}",
        acquire_within.as_millis().min(i32::MAX as u128)
    ))
    .context("PRAGMA busy_timeout")?;
    let asked = Instant::now();
    conn.batch_execute("BEGIN EXCLUSIVE").with_context(|| {
        format!(
            "BEGIN EXCLUSIVE on {} did not get the lock within {}",
            path.display(),
            schema::settings::fmt_duration(acquire_within)
        )
    })?;
    let got = Instant::now();
    on_acquired(got - asked);
    while got.elapsed() < hold_for && !stop.load(Ordering::SeqCst) {
        std::thread::sleep((hold_for - got.elapsed()).min(Duration::from_millis(50)));
    }
    let held = got.elapsed();
    conn.batch_execute("ROLLBACK").context("ROLLBACK")?;
    Ok(Held {
        waited: got - asked,
        held,
    })
}
