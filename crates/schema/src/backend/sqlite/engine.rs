//! SQLite's side of the backend interface: opening a connection with the lab's
//! busy handler and hooks, and answering from the raw handle.

use std::ffi::c_void;
use std::sync::atomic::Ordering;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel::sqlite::SqliteConnection;
use libsqlite3_sys as ffi;

use crate::backend::engine::{Engine, Kind};
use crate::backend::Conn;
use crate::db::Policy;
use crate::error::{DbError, LockClass, Phase};
use crate::settings::{CheckpointMode, TxnMode};

use super::hook::*;
use crate::backend::conn::OpenError;
use crate::backend::target::DbTarget;

/// The raw handle of one SQLite connection and the state its callbacks share.
/// Dropped after the diesel connection that closes the handle (see the field
/// order of `LabConn`).
pub struct SqliteEngine {
    raw: RawDb,
    /// The busy handler's context: kept alive as long as the handle.
    _busy_ctx: Box<BusyCtxBox>,
    hook: Box<Hook>,
}

/// Opens a connection and applies the policy: first the lab's busy handler,
/// then the other pragmas, one statement each. `create` false opens with
/// `mode=rw`: a missing file is an error, never a new empty file.
pub fn open(
    target: &DbTarget,
    policy: &Policy,
    create: bool,
) -> Result<(Conn, SqliteEngine), OpenError> {
    let path = target.display();
    let setup = |message: String| OpenError::Setup {
        path: path.clone(),
        message,
    };
    register_auto_extension().map_err(setup)?;
    LAST_OPENED.with(|slot| slot.set(std::ptr::null_mut()));
    let mut conn =
        SqliteConnection::establish(&target.sqlite_uri(create)).map_err(|e| OpenError::Open {
            path: path.clone(),
            message: e.to_string(),
        })?;
    let raw = LAST_OPENED.with(|slot| slot.replace(std::ptr::null_mut()));
    if raw.is_null() {
        return Err(setup(
            "the auto extension did not see the new connection".to_string(),
        ));
    }
    let hook = Box::new(Hook::new(
        policy.busy_timeout,
        policy.busy_wait,
        policy.stop.clone(),
    ));
    let ctx = &*hook as *const Hook as *mut c_void;
    let busy_ctx = Box::new(BusyCtxBox(BusyCtx {
        hook: &*hook as *const Hook,
        db: raw,
    }));
    let busy_ptr = &busy_ctx.0 as *const BusyCtx as *mut c_void;
    // SAFETY: raw is the live handle of `conn`, opened on this thread; the
    // contexts outlive it (see the field order of LabConn).
    let rc = unsafe {
        let rc = ffi::sqlite3_busy_handler(raw, Some(busy_handler), busy_ptr);
        if rc == ffi::SQLITE_OK {
            ffi::sqlite3_trace_v2(
                raw,
                ffi::SQLITE_TRACE_STMT | ffi::SQLITE_TRACE_PROFILE,
                Some(trace_hook),
                ctx,
            )
        } else {
            rc
        }
    };
    if rc != ffi::SQLITE_OK {
        return Err(setup(format!(
            "installing the busy handler failed with code {rc}"
        )));
    }
    conn.set_instrumentation(CodeCapture {
        raw: RawDb(raw),
        hook: HookPtr(&*hook as *const Hook),
    });
    let engine = SqliteEngine {
        raw: RawDb(raw),
        _busy_ctx: busy_ctx,
        hook,
    };
    let pragmas = [
        format!(
            "PRAGMA synchronous = {}",
            policy.synchronous.as_str().to_uppercase()
        ),
        "PRAGMA foreign_keys = ON".to_string(),
        // SQLite's default is 1000 pages; `background` leaves checkpoints
        // to the daemons' checkpointer threads (see `checkpoint`).
        format!(
            "PRAGMA wal_autocheckpoint = {}",
            match policy.checkpoint {
                CheckpointMode::Auto => 1000,
                CheckpointMode::Background => 0,
            }
        ),
    ];
    for pragma in pragmas {
        conn.batch_execute(&pragma)
            .map_err(|e| setup(format!("{pragma}: {e}")))?;
    }
    Ok((Conn::Sqlite(conn), engine))
}

impl SqliteEngine {
    /// The extended result code of the failing statement, read on this
    /// connection's own handle: `sqlite3_extended_errcode` if the handle still
    /// holds an error, else the code captured on the same handle when diesel
    /// reported the failed query (diesel re-binds a failed statement's
    /// parameters, and a bind clears the handle's code).
    pub fn extended_errcode(&self) -> i32 {
        // SAFETY: the handle is live while self is.
        let now = unsafe { ffi::sqlite3_extended_errcode(self.raw.0) };
        if !is_success(now) {
            return now;
        }
        match self.hook.failed_code() {
            Some(code) if !is_success(code) => code,
            _ => now,
        }
    }
}

impl Engine for SqliteEngine {
    fn kind(&self) -> Kind {
        Kind::Sqlite
    }

    fn begin_sql(&self, mode: TxnMode, implicit: bool) -> &'static str {
        match (mode, implicit) {
            (TxnMode::Deferred, false) => "BEGIN DEFERRED",
            (TxnMode::Deferred, true) => "BEGIN",
            (TxnMode::Immediate, _) => "BEGIN IMMEDIATE",
        }
    }

    fn savepoint_begins_transaction(&self) -> bool {
        true
    }

    fn in_transaction(&self) -> Option<bool> {
        // SAFETY: the handle is live while self is.
        Some(unsafe { ffi::sqlite3_get_autocommit(self.raw.0) == 0 })
    }

    fn holds_write_lock(&self) -> Option<bool> {
        // SAFETY: the handle is live while self is.
        Some(unsafe {
            ffi::sqlite3_txn_state(self.raw.0, std::ptr::null()) == ffi::SQLITE_TXN_WRITE
        })
    }

    fn classify(&mut self, _conn: &mut Conn, phase: Phase, err: &diesel::result::Error) -> DbError {
        let rec = self.hook.record();
        match err {
            diesel::result::Error::DatabaseError(_, info) => {
                let mut code = self.extended_errcode();
                if is_success(code) && rec.gave_up {
                    // The code was lost to diesel's cleanup (a failed row-loading
                    // query), but the busy handler returned 0 during this
                    // statement, and SQLite answers that with SQLITE_BUSY.
                    code = ffi::SQLITE_BUSY;
                }
                DbError {
                    class: LockClass::from_sqlite(code, rec.gave_up, rec.calls > 0),
                    phase,
                    extended_code: code,
                    server_code: None,
                    waited: rec.waited,
                    busy_calls: rec.calls,
                    message: info.message().to_string(),
                }
            }
            other => DbError {
                waited: rec.waited,
                busy_calls: rec.calls,
                ..DbError::other(phase, other.to_string())
            },
        }
    }

    fn busy_record(&self) -> BusyRecord {
        self.hook.record()
    }

    fn total_lock_wait(&self) -> Option<Duration> {
        Some(Duration::from_micros(
            self.hook.total_wait_us.load(Ordering::Relaxed),
        ))
    }

    fn busy_timeout(&self) -> Duration {
        // The handler's own state, never PRAGMA busy_timeout (which the lab
        // does not use).
        self.hook.timeout
    }

    fn lock_acquired_at(&self) -> Option<i64> {
        *lock(&self.hook.acquired)
    }

    fn reset_acquired(&self) {
        *lock(&self.hook.acquired) = None;
    }
}

#[derive(QueryableByName)]
struct JournalModeRow {
    #[diesel(sql_type = Text)]
    journal_mode: String,
}

#[derive(QueryableByName)]
struct SynchronousRow {
    #[diesel(sql_type = Text)]
    synchronous: String,
}

/// Reads `PRAGMA journal_mode` or `PRAGMA synchronous` (the only two the lab
/// reads back) as text.
pub(crate) fn pragma_text(conn: &mut Conn, pragma: &str) -> QueryResult<String> {
    match pragma {
        "PRAGMA journal_mode" => diesel::sql_query(pragma)
            .get_result::<JournalModeRow>(conn)
            .map(|r| r.journal_mode.to_ascii_lowercase()),
        _ => diesel::sql_query("PRAGMA synchronous")
            .get_result::<SynchronousRow>(conn)
            .map(|r| r.synchronous),
    }
}
