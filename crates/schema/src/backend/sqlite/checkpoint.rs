//! The background checkpointer of `LAB_CHECKPOINT=background`: every
//! connection opens with `PRAGMA wal_autocheckpoint = 0`, so no COMMIT runs a
//! checkpoint on its request's time, and this thread, on a connection of its
//! own, runs `PRAGMA wal_checkpoint(PASSIVE)` every [`CHECKPOINT_EVERY`].
//! PASSIVE never waits for a lock and never blocks a writer or a reader: it
//! copies what no reader still needs and returns. Every daemon runs one, so
//! the WAL stays bounded while any of them lives; two at once simply find
//! the checkpoint busy and try again at their next turn.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::sql_types::Integer;
use diesel::sqlite::SqliteConnection;

use super::StopFlag;

/// How often the checkpointer runs.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

#[derive(QueryableByName)]
struct CheckpointRow {
    #[diesel(sql_type = Integer)]
    busy: i32,
    #[diesel(sql_type = Integer)]
    checkpointed: i32,
}

/// What the checkpointer did, for its log line at the end.
#[derive(Debug, Clone, Copy, Default)]
pub struct Checkpoints {
    /// Checkpoints that ran to their end (`busy` = 0).
    pub done: u64,
    /// Checkpoints cut short: another checkpointer or a reader's snapshot
    /// (SQLITE_BUSY, or busy = 1), or an error such as a full disk.
    pub busy: u64,
    /// The sum of the frames each finished checkpoint reported as
    /// checkpointed: frames an earlier one copied count again until the WAL
    /// restarts, so this measures work seen, not distinct pages.
    pub pages: u64,
    /// Wall time spent checkpointing.
    pub time: Duration,
}

/// Starts the checkpointer that `policy` asks for: under `background`, on an
/// SQLite file, one thread that ends with the policy's stop flag; None
/// otherwise (SQLite's own auto-checkpoints, or a server).
pub fn start_checkpointer(
    process: &str,
    target: &crate::backend::target::DbTarget,
    policy: &crate::db::Policy,
) -> std::io::Result<Option<std::thread::JoinHandle<Checkpoints>>> {
    match (policy.checkpoint, target.sqlite_path()) {
        (crate::settings::CheckpointMode::Background, Some(file)) => {
            spawn_checkpointer(process.to_string(), file.to_path_buf(), policy.stop.clone())
                .map(Some)
        }
        _ => Ok(None),
    }
}

/// Starts the checkpointer of the SQLite file `path`; it ends when `stop` is
/// set, logs its counts as `process` and returns them.
pub fn spawn_checkpointer(
    process: String,
    path: PathBuf,
    stop: StopFlag,
) -> std::io::Result<std::thread::JoinHandle<Checkpoints>> {
    std::thread::Builder::new()
        .name("checkpointer".into())
        .spawn(move || {
            let done = run(&path, &stop);
            log::info!(
                "{process}: checkpointer: {} checkpoints ({} pages, {:.1} s), {} found busy",
                done.done,
                done.pages,
                done.time.as_secs_f64(),
                done.busy
            );
            done
        })
}

fn run(path: &std::path::Path, stop: &StopFlag) -> Checkpoints {
    let mut done = Checkpoints::default();
    let url = format!("file:{}?mode=rw", path.display());
    let mut conn = match SqliteConnection::establish(&url) {
        Ok(c) => c,
        Err(e) => {
            log::warn!("checkpointer: cannot open {}: {e}", path.display());
            return done;
        }
    };
    while !stop.is_set() {
        std::thread::sleep(CHECKPOINT_EVERY);
        let t0 = Instant::now();
        match diesel::sql_query("PRAGMA wal_checkpoint(PASSIVE)")
            .get_result::<CheckpointRow>(&mut conn)
        {
            Ok(r) if r.busy == 0 => {
                done.done += 1;
                done.pages += u64::try_from(r.checkpointed.max(0)).unwrap_or(0);
            }
            Ok(_) => done.busy += 1,
            // SQLITE_BUSY (another connection checkpoints now) or an I/O
            // error; the next turn tries again.
            Err(_) => done.busy += 1,
        }
        done.time += t0.elapsed();
    }
    done
}
