//! `every-3-tasks`: Toaster's buildinfohelper (bitbake's
//! `lib/bb/ui/buildinfohelper.py`) in Django's manual-transaction mode, at the
//! SQL level, as toaster-facts.md lists it. Op names other tools read:
//!
//! - It stays in autocommit until its first sync: each save is then its own
//!   transaction (BEGIN as the policy says, COMMIT).
//! - A **sync** is `set_autocommit(True)` then `set_autocommit(False)`: COMMIT
//!   if a transaction is open, on every third task-level event (TaskStarted,
//!   TaskSucceeded, TaskFailed), and once more at the end of a build. A sync
//!   whose COMMIT fails is not rolled back: the transaction stays open,
//!   holding its locks, and the next sync tries the COMMIT again (`sync`).
//! - After the first sync, a save with no transaction open is
//!   `SAVEPOINT`/`RELEASE`: SQLite begins a deferred transaction (whatever the
//!   transaction mode), and RELEASE commits it. Inside an open transaction it
//!   is a savepoint that commits only with the next sync (`save_event`).
//! - A task row is made by `get_or_create` (`save_task`): a read outside any
//!   block (the get), then an `atomic()` block that first reads (Task's
//!   constructor looks up its help text and its build) and then inserts, with
//!   the patched-save retry inside that still-open block. The task's end is a
//!   get, then a plain save.
//! - A recipe's packages are written with a bulk insert (`bulk_packages`),
//!   never retried. In manual mode with no transaction open it begins one
//!   implicitly (Python's sqlite3 issues BEGIN before the INSERT) that stays
//!   open across the real time between events, until the next sync.
//! - An event whose write fails is skipped, as Toaster's UI loop does.
//! - The end of a build saves the outcome, syncs once more and wakes runbuilds;
//!   the build-done handler then saves the request's final state, frees the
//!   environment and wakes runbuilds again. A transaction the last sync could
//!   not commit is rolled back, as the UI process's exit would.

use super::{finish_request, insert_events, Commit, IngestCtx, Tally};
use crate::db::LabConn;
use crate::error::{OpError, TxError};
use crate::models::{Booking, Build, BuildEvent, Environment};
use crate::stream::StreamEvent;
use crate::types::{BuildId, EventKind, Outcome};

#[derive(Debug, Default)]
pub struct ToasterSync {
    /// Task-level events of this build so far.
    task_events: u64,
    /// One recipe's packaging, written in bulk when its last package came.
    packages: Vec<StreamEvent>,
}

impl ToasterSync {
    /// `get_or_create` of a task row: the get, then a block that reads and
    /// inserts, the insert retried inside the block.
    fn save_task_created(
        ctx: &IngestCtx<'_>,
        conn: &mut LabConn,
        build: BuildId,
        e: StreamEvent,
    ) -> bool {
        let events = [e];
        ctx.lab
            .op("save_task", |op| {
                if op.read(conn, |c| BuildEvent::exists(c, build, events[0].seq))? {
                    return Ok(());
                }
                op.block(conn, |op, conn| {
                    // Task's constructor queries before the save.
                    op.read(conn, |c| Build::get(c, build))?;
                    op.save(conn, |tx| insert_events(tx, build, &events))
                })?;
                Ok(())
            })
            .is_ok()
    }

    /// The end of a task: the get finds the task, then a plain patched save.
    fn save_task_updated(
        ctx: &IngestCtx<'_>,
        conn: &mut LabConn,
        build: BuildId,
        e: StreamEvent,
    ) -> bool {
        let events = [e];
        ctx.lab
            .op("save_task", |op| {
                op.read(conn, |c| BuildEvent::exists(c, build, events[0].seq))?;
                op.save(conn, |tx| insert_events(tx, build, &events))?;
                Ok(())
            })
            .is_ok()
    }

    fn save_event(ctx: &IngestCtx<'_>, conn: &mut LabConn, build: BuildId, e: StreamEvent) -> bool {
        let events = [e];
        ctx.lab
            .op("save_event", |op| {
                op.save(conn, |tx| insert_events(tx, build, &events))?;
                Ok(())
            })
            .is_ok()
    }

    fn bulk_packages(&mut self, ctx: &IngestCtx<'_>, conn: &mut LabConn, build: BuildId) -> Tally {
        if self.packages.is_empty() {
            return Tally::default();
        }
        let packages = std::mem::take(&mut self.packages);
        let ok = ctx
            .lab
            .op("bulk_packages", |op| {
                op.statement(conn, |tx| insert_events(tx, build, &packages))
            })
            .is_ok();
        Tally::of(packages.len(), ok)
    }

    /// `set_autocommit(True); set_autocommit(False)`. Counted as an operation
    /// only when a transaction was open (there was something to commit).
    pub fn sync(ctx: &IngestCtx<'_>, conn: &mut LabConn) {
        if !conn.in_transaction() {
            conn.set_manual(true);
            return;
        }
        let _ = ctx.lab.op("sync", |op| op.sync(conn));
    }

    /// Rolls back a transaction no sync could commit (the UI process exits),
    /// and leaves manual mode.
    fn close(ctx: &IngestCtx<'_>, conn: &mut LabConn, why: &str) {
        if conn.in_transaction() {
            let txn = conn.txn_id();
            log::error!(
                "{}: {why}: rolling back a transaction no sync could commit ({} rows lost), as Toaster's UI process would at exit",
                ctx.lab.process,
                conn.pending_rows()
            );
            conn.rollback();
            ctx.lab.stats.txn_settled(txn, true);
        }
        conn.set_manual(false);
    }
}

impl Commit for ToasterSync {
    fn name(&self) -> String {
        "every-3-tasks".to_string()
    }

    fn start(&mut self, conn: &mut LabConn) {
        self.task_events = 0;
        self.packages.clear();
        // Since 2022 buildinfohelper stays in autocommit until its first sync.
        conn.set_manual(false);
    }

    fn event(
        &mut self,
        ctx: &IngestCtx<'_>,
        conn: &mut LabConn,
        build: BuildId,
        e: StreamEvent,
    ) -> Tally {
        let mut t = Tally::default();
        if e.kind != EventKind::Package {
            t.add(self.bulk_packages(ctx, conn, build));
        }
        let kind = e.kind;
        let ok = match kind {
            EventKind::Package => {
                self.packages.push(e);
                return t;
            }
            EventKind::TaskStarted => Self::save_task_created(ctx, conn, build, e),
            EventKind::TaskSucceeded | EventKind::TaskFailed => {
                Self::save_task_updated(ctx, conn, build, e)
            }
            EventKind::Log | EventKind::Variable | EventKind::Note => {
                Self::save_event(ctx, conn, build, e)
            }
        };
        t.add(Tally::of(1, ok));
        if kind.is_task_level() {
            self.task_events += 1;
            if self.task_events % 3 == 0 {
                Self::sync(ctx, conn);
            }
        }
        t
    }

    fn flush(&mut self, ctx: &IngestCtx<'_>, conn: &mut LabConn, build: BuildId) -> Tally {
        self.bulk_packages(ctx, conn, build)
    }

    fn finish(
        &mut self,
        ctx: &IngestCtx<'_>,
        conn: &mut LabConn,
        build: &Build,
        outcome: Outcome,
        progress: Tally,
    ) -> Result<(), OpError> {
        let owner = ctx.lab.process.clone();
        // The end of the build: save the outcome, one more sync, wake runbuilds.
        let saved = ctx.lab.op("finish", |op| {
            op.save(conn, |tx| {
                if tx.counted(|c| Build::finish(c, build.id, &owner, outcome))? == 0 {
                    return Err(TxError::abort("the build is no longer ours"));
                }
                tx.counted(|c| {
                    Build::add_progress(
                        c,
                        build.id,
                        progress.written as i32,
                        progress.given_up as i32,
                    )
                })?;
                Ok(())
            })
        });
        Self::sync(ctx, conn);
        (ctx.notify)();
        // The build-done handler: the request's final state, the environment
        // freed (then its booking closed), runbuilds woken again.
        let handled = match build.request_id {
            Some(r) if saved.is_ok() => ctx.lab.op("finish_request", |op| {
                op.save(conn, |tx| finish_request(tx, r, outcome))?;
                op.save(conn, |tx| {
                    tx.counted(|c| Environment::free_for_requests(c, &[r]))?;
                    tx.counted(|c| Booking::release_for_requests(c, &[r]))?;
                    Ok(())
                })
            }),
            _ => Ok(()),
        };
        (ctx.notify)();
        Self::close(ctx, conn, "the build ended");
        saved.and(handled)
    }

    fn interrupt(&mut self, ctx: &IngestCtx<'_>, conn: &mut LabConn) {
        Self::sync(ctx, conn);
        Self::close(ctx, conn, "stopping in the middle of a build");
    }
}
