//! The one place that opens connections and applies the lab's policy.
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
//! 2. [`LabConn::open`] clears the slot, calls `SqliteConnection::establish`, and
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
//! 5. The entry points ([`LabConn::write_txn`], [`LabConn::autocommit`],
//!    [`LabConn::read`]) issue BEGIN/COMMIT/ROLLBACK themselves rather than use
//!    diesel's `transaction()`, which runs ROLLBACK before it returns the error and
//!    so overwrites the code. They read the code right after the failing call.
//!
//! The journal mode belongs to the file and is set once, by `locklab migrate`.

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use diesel::connection::{Instrumentation, InstrumentationEvent, SimpleConnection};
use diesel::prelude::*;
use diesel::r2d2::{self, ManageConnection};
use diesel::sql_types::Text;
use diesel::sqlite::SqliteConnection;
use libsqlite3_sys as ffi;

use crate::error::{DbError, LockClass, Phase, TxError};
use crate::settings::{RetryPolicy, Synchronous, TxnMode};
use crate::types::now_micros;

/// The connection policy applied on every connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub busy_timeout: Duration,
    pub synchronous: Synchronous,
    pub txn_mode: TxnMode,
    pub retry: RetryPolicy,
    pub retry_deadline: Duration,
    /// App work inside each write transaction (`LAB_TXN_WORK`), before COMMIT.
    pub txn_work: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            busy_timeout: Duration::from_secs(5),
            synchronous: Synchronous::Full,
            txn_mode: TxnMode::Deferred,
            retry: RetryPolicy::None,
            retry_deadline: Duration::from_secs(30),
            txn_work: Duration::ZERO,
        }
    }
}

// ---------------------------------------------------------------------------
// Where the database is
// ---------------------------------------------------------------------------

/// A database location from `DATABASE_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbTarget {
    /// An SQLite file.
    Sqlite(PathBuf),
}

impl DbTarget {
    /// Parses `DATABASE_URL`: a path, `sqlite://path` or `sqlite:path`.
    /// `postgres://` and `mysql://` are recognised and refused with a clear message.
    pub fn parse(url: &str) -> Result<DbTarget, String> {
        let url = url.trim();
        if url.is_empty() {
            return Err("the database URL is empty".to_string());
        }
        let lower = url.to_ascii_lowercase();
        if lower.starts_with("postgres://")
            || lower.starts_with("postgresql://")
            || lower.starts_with("mysql://")
            || lower.starts_with("mariadb://")
        {
            return Err(format!(
                "{url}: the server backends (PostgreSQL, MySQL/MariaDB) are not built into this \
                 version of locklab yet; use an SQLite file path"
            ));
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        if path == ":memory:" || path.starts_with("file:") {
            return Err(format!(
                "{url}: give a plain file path; the lab needs a real file that several processes share"
            ));
        }
        Ok(DbTarget::Sqlite(PathBuf::from(path)))
    }

    pub fn path(&self) -> &Path {
        match self {
            DbTarget::Sqlite(p) => p,
        }
    }

    /// An SQLite URI for this file. `create` false opens with `mode=rw`, so a
    /// mistyped path is an error and never a new empty file.
    pub fn uri(&self, create: bool) -> String {
        let mut encoded = String::from("file:");
        for b in self.path().to_string_lossy().bytes() {
            match b {
                b'?' | b'#' | b'%' => encoded.push_str(&format!("%{b:02X}")),
                _ => encoded.push(char::from(b)),
            }
        }
        format!("{encoded}?mode={}", if create { "rwc" } else { "rw" })
    }
}

// ---------------------------------------------------------------------------
// The busy handler and its record
// ---------------------------------------------------------------------------

/// The union of every connection's lock waits in this process: wall time during
/// which at least one connection of the process waited for the write lock (in
/// the busy handler). `lock_wait_share` divides it by the elapsed time, so
/// several threads waiting at once do not count twice.
#[derive(Debug, Default)]
struct WaitUnion {
    waiters: u32,
    since: Option<Instant>,
    total: Duration,
}

static WAIT_UNION: Mutex<WaitUnion> = Mutex::new(WaitUnion {
    waiters: 0,
    since: None,
    total: Duration::ZERO,
});

fn wait_enter(now: Instant) {
    let mut u = lock(&WAIT_UNION);
    if u.waiters == 0 {
        u.since = Some(now);
    }
    u.waiters += 1;
}

fn wait_leave(now: Instant) {
    let mut u = lock(&WAIT_UNION);
    u.waiters = u.waiters.saturating_sub(1);
    if u.waiters == 0 {
        if let Some(since) = u.since.take() {
            u.total += now.saturating_duration_since(since);
        }
    }
}

/// Wall time during which at least one connection of this process waited for
/// the write lock, since the process started.
pub fn process_lock_wait() -> Duration {
    let u = lock(&WAIT_UNION);
    u.total + u.since.map(|s| s.elapsed()).unwrap_or_default()
}

/// SQLite's default busy-callback schedule (`sqliteDefaultBusyCallback`), in ms.
const DELAYS_MS: [u64; 12] = [1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100];

/// What the busy handler did during the current statement.
#[derive(Debug, Clone, Copy, Default)]
pub struct BusyRecord {
    /// Times the handler ran.
    pub calls: u32,
    /// Whether it gave up (returned 0).
    pub gave_up: bool,
    /// Time waited in the handler, all lock events of the statement together.
    pub waited: Duration,
}

#[derive(Debug, Default)]
struct StmtState {
    started_wall: i64,
    calls: u32,
    gave_up: bool,
    waited_before_event: Duration,
    event_start: Option<Instant>,
    last_call: Option<Instant>,
    waited_in_event: Duration,
    last_wake_wall: Option<i64>,
    /// A lock wait of this statement is counted in the process's wait union.
    in_wait: bool,
    /// The code read by diesel's FinishQuery instrumentation event, which diesel
    /// emits right after a failed `execute`, before it resets the statement
    /// and re-binds its parameters (a bind clears the handle's error code).
    failed_code: Option<c_int>,
}

/// The state shared with SQLite's callbacks. Boxed, so its address is stable for
/// the connection's life; the connection is closed before it is dropped.
#[derive(Debug)]
struct Hook {
    timeout: Duration,
    stmt: Mutex<StmtState>,
    /// Wall-clock µs at which the write lock was obtained in the current attempt.
    acquired: Mutex<Option<i64>>,
    /// Every wait in the handler, for `lock_wait_share`.
    total_wait_us: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Hook {
    fn new(timeout: Duration) -> Hook {
        Hook {
            timeout,
            stmt: Mutex::new(StmtState::default()),
            acquired: Mutex::new(None),
            total_wait_us: AtomicU64::new(0),
        }
    }

    fn add_wait(&self, d: Duration) {
        self.total_wait_us.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Returns 1 to make SQLite try again, 0 to give up.
    fn on_busy(&self, count: c_int) -> c_int {
        let now = Instant::now();
        let mut st = lock(&self.stmt);
        st.calls = st.calls.saturating_add(1);
        if !st.in_wait {
            st.in_wait = true;
            wait_enter(now);
        }
        let event_start = match (count, st.event_start) {
            (0, _) | (_, None) => {
                let previous = st.waited_in_event;
                st.waited_before_event += previous;
                st.waited_in_event = Duration::ZERO;
                st.event_start = Some(now);
                now
            }
            (_, Some(start)) => {
                if let Some(last) = st.last_call {
                    self.add_wait(now.saturating_duration_since(last));
                }
                start
            }
        };
        let elapsed = now.saturating_duration_since(event_start);
        st.waited_in_event = elapsed;
        st.last_call = Some(now);
        if elapsed >= self.timeout {
            st.gave_up = true;
            st.in_wait = false;
            wait_leave(now);
            return 0;
        }
        let step = usize::try_from(count)
            .unwrap_or(usize::MAX)
            .min(DELAYS_MS.len() - 1);
        let delay = Duration::from_millis(DELAYS_MS[step]).min(self.timeout - elapsed);
        drop(st);
        std::thread::sleep(delay);
        let mut st = lock(&self.stmt);
        st.last_wake_wall = Some(now_micros());
        1
    }

    fn on_statement_start(&self) {
        let mut st = lock(&self.stmt);
        if st.in_wait {
            wait_leave(Instant::now());
        }
        *st = StmtState {
            started_wall: now_micros(),
            ..StmtState::default()
        };
    }

    fn on_statement_end(&self, holds_write_lock: bool) {
        let mut st = lock(&self.stmt);
        if st.in_wait {
            st.in_wait = false;
            wait_leave(Instant::now());
        }
        if !holds_write_lock {
            return;
        }
        let at = st.last_wake_wall.unwrap_or(st.started_wall);
        drop(st);
        let mut acquired = lock(&self.acquired);
        if acquired.is_none() {
            *acquired = Some(at);
        }
    }

    fn record(&self) -> BusyRecord {
        let st = lock(&self.stmt);
        BusyRecord {
            calls: st.calls,
            gave_up: st.gave_up,
            waited: st.waited_before_event + st.waited_in_event,
        }
    }

    fn failed_code(&self) -> Option<c_int> {
        lock(&self.stmt).failed_code
    }

    fn on_failed_query(&self, code: c_int) {
        lock(&self.stmt).failed_code = Some(code);
    }
}

unsafe extern "C" fn busy_handler(ctx: *mut c_void, count: c_int) -> c_int {
    // SAFETY: ctx is the Box<Hook> owned by the LabConn whose handle is calling;
    // the handle is closed before the Box is dropped.
    let hook = unsafe { &*(ctx as *const Hook) };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook.on_busy(count))).unwrap_or(0)
}

unsafe extern "C" fn trace_hook(
    mask: c_uint,
    ctx: *mut c_void,
    p: *mut c_void,
    x: *mut c_void,
) -> c_int {
    // SAFETY: as for busy_handler.
    let hook = unsafe { &*(ctx as *const Hook) };
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match mask {
        ffi::SQLITE_TRACE_STMT => {
            // A trigger's sub-program is reported with its text behind "--";
            // only a statement's own start resets the record.
            let sql = x as *const c_char;
            // SAFETY: for SQLITE_TRACE_STMT, X is the statement's UTF-8 text.
            let is_trigger =
                !sql.is_null() && unsafe { CStr::from_ptr(sql) }.to_bytes().starts_with(b"--");
            if !is_trigger {
                hook.on_statement_start();
            }
        }
        ffi::SQLITE_TRACE_PROFILE => {
            let stmt = p as *mut ffi::sqlite3_stmt;
            // SAFETY: for SQLITE_TRACE_PROFILE, P is the finishing statement.
            // This runs inside sqlite3_step before the step's result is stored
            // on the handle, so the result code cannot be read here.
            let holds = unsafe {
                let db = ffi::sqlite3_db_handle(stmt);
                let in_write_txn =
                    ffi::sqlite3_txn_state(db, std::ptr::null()) == ffi::SQLITE_TXN_WRITE;
                // an autocommit write that finished (not halted mid-run by BUSY)
                let autocommit_write = ffi::sqlite3_stmt_readonly(stmt) == 0
                    && ffi::sqlite3_get_autocommit(db) != 0
                    && ffi::sqlite3_stmt_busy(stmt) == 0;
                in_write_txn || autocommit_write
            };
            hook.on_statement_end(holds);
        }
        _ => {}
    }));
    0
}

/// OK, ROW and DONE: what a statement that did not fail leaves behind.
fn is_success(code: c_int) -> bool {
    matches!(code, ffi::SQLITE_OK | ffi::SQLITE_ROW | ffi::SQLITE_DONE)
}

thread_local! {
    static LAST_OPENED: Cell<*mut ffi::sqlite3> = const { Cell::new(std::ptr::null_mut()) };
}

unsafe extern "C" fn note_opened(
    db: *mut ffi::sqlite3,
    _err: *mut *mut c_char,
    _api: *const ffi::sqlite3_api_routines,
) -> c_int {
    LAST_OPENED.with(|slot| slot.set(db));
    ffi::SQLITE_OK
}

fn register_auto_extension() -> Result<(), String> {
    static ONCE: Once = Once::new();
    static mut RC: c_int = ffi::SQLITE_OK;
    ONCE.call_once(|| {
        // SAFETY: registering a plain function pointer; SQLite copies it.
        let rc = unsafe { ffi::sqlite3_auto_extension(Some(note_opened)) };
        // SAFETY: written once, inside call_once, before any read.
        unsafe { RC = rc };
    });
    // SAFETY: read after call_once completed; never written again.
    let rc = unsafe { RC };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(format!("sqlite3_auto_extension failed with code {rc}"))
    }
}

/// diesel instrumentation that reads the error code on the failing handle when
/// diesel reports a failed query, before diesel's cleanup overwrites it.
struct CodeCapture {
    raw: RawDb,
    hook: HookPtr,
}

struct HookPtr(*const Hook);

// SAFETY: the pointer targets the Box<Hook> of the LabConn that owns the diesel
// connection holding this instrumentation; both move together, the hook outlives
// the connection, and only the thread using the connection calls it.
unsafe impl Send for HookPtr {}

impl Instrumentation for CodeCapture {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let InstrumentationEvent::FinishQuery { error: Some(_), .. } = event {
            // SAFETY: see HookPtr; the handle is live while its connection is.
            let code = unsafe { ffi::sqlite3_extended_errcode(self.raw.0) };
            unsafe { &*self.hook.0 }.on_failed_query(code);
        }
    }
}

/// The raw handle of a live connection. Used only by the thread that owns the
/// `LabConn`.
#[derive(Debug)]
struct RawDb(*mut ffi::sqlite3);

// SAFETY: the handle moves with its SqliteConnection (which is Send) and is only
// used by whichever single thread holds the LabConn.
unsafe impl Send for RawDb {}

// ---------------------------------------------------------------------------
// The connection
// ---------------------------------------------------------------------------

/// A connection with the lab's policy: the diesel connection, its raw handle and
/// its busy-handler state, side by side.
pub struct LabConn {
    // Field order matters: the diesel connection (which closes the handle) is
    // dropped before the hook that the handle's callbacks point to.
    conn: SqliteConnection,
    raw: RawDb,
    hook: Box<Hook>,
    policy: Arc<Policy>,
}

impl std::fmt::Debug for LabConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabConn")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open {path}: {message}")]
    Open { path: String, message: String },
    #[error("cannot set up the connection to {path}: {message}")]
    Setup { path: String, message: String },
}

/// The outcome of a successful attempt: when its write lock was obtained.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttemptTimes {
    /// Wall-clock µs when the attempt began waiting (BEGIN or the statement).
    pub started: i64,
    /// Wall-clock µs when the write lock was really obtained, if it was.
    pub acquired: Option<i64>,
    /// Wall-clock µs when the attempt ended.
    pub ended: i64,
}

/// A failed attempt and its times.
#[derive(Debug)]
pub struct AttemptError {
    pub error: AttemptFailure,
    pub times: AttemptTimes,
    /// Rows that committed anyway (autocommit statements before the failure).
    pub rows: u64,
}

#[derive(Debug)]
pub enum AttemptFailure {
    Db(DbError),
    Aborted(String),
}

/// A transaction body's handle: the diesel connection, and a count of the rows
/// the body wrote (so `rows_committed` counts committed rows only).
pub struct Tx<'c> {
    conn: &'c mut SqliteConnection,
    rows: u64,
}

impl<'c> Tx<'c> {
    pub fn conn(&mut self) -> &mut SqliteConnection {
        self.conn
    }
    /// Adds rows written by this transaction.
    pub fn wrote(&mut self, rows: usize) {
        self.rows += rows as u64;
    }

    /// Runs a write and counts the rows it reports.
    pub fn counted(
        &mut self,
        write: impl FnOnce(&mut SqliteConnection) -> QueryResult<usize>,
    ) -> QueryResult<usize> {
        let n = write(self.conn)?;
        self.rows += n as u64;
        Ok(n)
    }
}

impl LabConn {
    /// Opens a connection and applies the policy: first the lab's busy handler,
    /// then the other pragmas, one statement each. `create` false opens with
    /// `mode=rw`: a missing file is an error, never a new empty file.
    pub fn open(
        target: &DbTarget,
        policy: Arc<Policy>,
        create: bool,
    ) -> Result<LabConn, OpenError> {
        let path = target.path().display().to_string();
        register_auto_extension().map_err(|message| OpenError::Setup {
            path: path.clone(),
            message,
        })?;
        LAST_OPENED.with(|slot| slot.set(std::ptr::null_mut()));
        let conn =
            SqliteConnection::establish(&target.uri(create)).map_err(|e| OpenError::Open {
                path: path.clone(),
                message: e.to_string(),
            })?;
        let raw = LAST_OPENED.with(|slot| slot.replace(std::ptr::null_mut()));
        if raw.is_null() {
            return Err(OpenError::Setup {
                path,
                message: "the auto extension did not see the new connection".to_string(),
            });
        }
        let hook = Box::new(Hook::new(policy.busy_timeout));
        let ctx = &*hook as *const Hook as *mut c_void;
        // SAFETY: raw is the live handle of `conn`, opened on this thread; ctx
        // outlives it (see the field order of LabConn).
        let rc = unsafe {
            let rc = ffi::sqlite3_busy_handler(raw, Some(busy_handler), ctx);
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
            return Err(OpenError::Setup {
                path,
                message: format!("installing the busy handler failed with code {rc}"),
            });
        }
        let mut conn = conn;
        conn.set_instrumentation(CodeCapture {
            raw: RawDb(raw),
            hook: HookPtr(&*hook as *const Hook),
        });
        let mut lab = LabConn {
            conn,
            raw: RawDb(raw),
            hook,
            policy,
        };
        let pragmas = [
            format!(
                "PRAGMA synchronous = {}",
                lab.policy.synchronous.as_str().to_uppercase()
            ),
            "PRAGMA foreign_keys = ON".to_string(),
        ];
        for pragma in pragmas {
            lab.conn
                .batch_execute(&pragma)
                .map_err(|e| OpenError::Setup {
                    path: path.clone(),
                    message: format!("{pragma}: {e}"),
                })?;
        }
        Ok(lab)
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The busy timeout, from the handler's own state (never from PRAGMA
    /// busy_timeout, which the lab does not use).
    pub fn busy_timeout(&self) -> Duration {
        self.hook.timeout
    }

    /// The busy handler's record for the last statement.
    pub fn busy_record(&self) -> BusyRecord {
        self.hook.record()
    }

    /// Total time this connection waited in the busy handler.
    pub fn total_lock_wait(&self) -> Duration {
        Duration::from_micros(self.hook.total_wait_us.load(Ordering::Relaxed))
    }

    /// The diesel connection, for reads outside the lab's entry points (tests,
    /// `check`). Writes go through [`LabConn::write_txn`] or
    /// [`LabConn::autocommit`].
    pub fn diesel(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }

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

    /// Whether a transaction is open on this connection.
    pub fn in_transaction(&self) -> bool {
        // SAFETY: the handle is live while self is.
        unsafe { ffi::sqlite3_get_autocommit(self.raw.0) == 0 }
    }

    /// The journal mode of the file, read back.
    pub fn journal_mode(&mut self) -> QueryResult<String> {
        pragma_text(&mut self.conn, "PRAGMA journal_mode")
    }

    /// `PRAGMA synchronous`, read back, as a name.
    pub fn synchronous(&mut self) -> QueryResult<String> {
        let n = pragma_text(&mut self.conn, "PRAGMA synchronous")?;
        Ok(match n.as_str() {
            "0" => "off",
            "1" => "normal",
            "2" => "full",
            "3" => "extra",
            other => return Ok(other.to_string()),
        }
        .to_string())
    }

    /// Classifies a failed call from this connection's own handle. Must be called
    /// right after the failing call, before anything else runs on the handle.
    pub fn classify(&self, phase: Phase, err: &diesel::result::Error) -> DbError {
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

    fn begin_attempt(&self) -> i64 {
        *lock(&self.hook.acquired) = None;
        now_micros()
    }

    fn acquired(&self) -> Option<i64> {
        *lock(&self.hook.acquired)
    }

    fn rollback_after_failure(&mut self) {
        if self.in_transaction() {
            if let Err(e) = self.conn.batch_execute("ROLLBACK") {
                log::warn!("rollback after a failed attempt failed too: {e}");
            }
        }
    }

    /// One attempt at a write transaction. It begins as the policy's transaction
    /// mode says (no caller picks a BEGIN kind), runs `body`, waits `txn_work`,
    /// and commits. On failure the class is read before the rollback. Retries and
    /// counting are the caller's ([`crate::ops`]).
    pub fn write_txn<T>(
        &mut self,
        body: &mut dyn FnMut(&mut Tx<'_>) -> Result<T, TxError>,
    ) -> Result<(T, u64, AttemptTimes), AttemptError> {
        let started = self.begin_attempt();
        let fail = |conn: &LabConn, error: AttemptFailure| AttemptError {
            error,
            times: AttemptTimes {
                started,
                acquired: conn.acquired(),
                ended: now_micros(),
            },
            rows: 0,
        };
        if let Err(err) = self.open_txn() {
            return Err(fail(self, AttemptFailure::Db(err)));
        }
        let mut tx = Tx {
            conn: &mut self.conn,
            rows: 0,
        };
        let result = body(&mut tx);
        let rows = tx.rows;
        let value = match result {
            Ok(v) => v,
            Err(TxError::Db(e)) => {
                let err = self.classify(Phase::Body, &e);
                self.rollback_after_failure();
                return Err(fail(self, AttemptFailure::Db(err)));
            }
            Err(TxError::Abort(reason)) => {
                self.rollback_after_failure();
                return Err(fail(self, AttemptFailure::Aborted(reason)));
            }
        };
        if !self.policy.txn_work.is_zero() {
            // LAB_TXN_WORK: a slower stack's time inside the transaction.
            std::thread::sleep(self.policy.txn_work);
        }
        if let Err(err) = self.commit() {
            return Err(fail(self, AttemptFailure::Db(err)));
        }
        Ok((
            value,
            rows,
            AttemptTimes {
                started,
                acquired: self.acquired(),
                ended: now_micros(),
            },
        ))
    }

    /// Begins a transaction as the policy says and leaves it open, for code that
    /// must split one transaction over several steps (a test interleaving two
    /// schedulers' claim phases). Pair with [`LabConn::commit`] or
    /// [`LabConn::rollback`]. Everything else uses [`LabConn::write_txn`].
    pub fn begin(&mut self) -> Result<(), DbError> {
        self.begin_attempt();
        self.open_txn()
    }

    /// BEGIN as the policy's transaction mode says; on failure the class is
    /// read, then anything half-open is rolled back.
    fn open_txn(&mut self) -> Result<(), DbError> {
        let begin = match self.policy.txn_mode {
            TxnMode::Deferred => "BEGIN DEFERRED",
            TxnMode::Immediate => "BEGIN IMMEDIATE",
        };
        self.conn.batch_execute(begin).map_err(|e| {
            let err = self.classify(Phase::Begin, &e);
            self.rollback_after_failure();
            err
        })
    }

    /// Commits the transaction opened by [`LabConn::begin`]; rolls back if the
    /// commit fails.
    pub fn commit(&mut self) -> Result<(), DbError> {
        self.conn.batch_execute("COMMIT").map_err(|e| {
            let err = self.classify(Phase::Commit, &e);
            self.rollback_after_failure();
            err
        })
    }

    /// Rolls back an open transaction, if any.
    pub fn rollback(&mut self) {
        self.rollback_after_failure();
    }

    /// One attempt of statements in autocommit mode: each statement is its own
    /// transaction. Used for per-event inserts and for views without
    /// ATOMIC_REQUESTS. A failure after some statements leaves those committed.
    pub fn autocommit<T>(
        &mut self,
        body: &mut dyn FnMut(&mut Tx<'_>) -> Result<T, TxError>,
    ) -> Result<(T, u64, AttemptTimes), AttemptError> {
        let started = self.begin_attempt();
        let mut tx = Tx {
            conn: &mut self.conn,
            rows: 0,
        };
        let result = body(&mut tx);
        let rows = tx.rows;
        let times = |conn: &LabConn| AttemptTimes {
            started,
            acquired: conn.acquired(),
            ended: now_micros(),
        };
        match result {
            Ok(v) => Ok((v, rows, times(self))),
            Err(TxError::Db(e)) => {
                let err = self.classify(Phase::Autocommit, &e);
                Err(AttemptError {
                    error: AttemptFailure::Db(err),
                    times: times(self),
                    rows,
                })
            }
            Err(TxError::Abort(reason)) => Err(AttemptError {
                error: AttemptFailure::Aborted(reason),
                times: times(self),
                rows,
            }),
        }
    }

    /// One read-only attempt (autocommit SELECTs).
    pub fn read<T>(
        &mut self,
        body: &mut dyn FnMut(&mut SqliteConnection) -> QueryResult<T>,
    ) -> Result<T, DbError> {
        match body(&mut self.conn) {
            Ok(v) => Ok(v),
            Err(e) => Err(self.classify(Phase::Read, &e)),
        }
    }

    /// Runs raw SQL in autocommit mode and classifies a failure: for tests and
    /// for the lab's own maintenance statements. Not for model queries.
    pub fn execute_raw(&mut self, sql: &str) -> Result<(), DbError> {
        self.conn
            .batch_execute(sql)
            .map_err(|e| self.classify(Phase::Autocommit, &e))
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
pub(crate) fn pragma_text(conn: &mut SqliteConnection, pragma: &str) -> QueryResult<String> {
    match pragma {
        "PRAGMA journal_mode" => diesel::sql_query(pragma)
            .get_result::<JournalModeRow>(conn)
            .map(|r| r.journal_mode.to_ascii_lowercase()),
        _ => diesel::sql_query("PRAGMA synchronous")
            .get_result::<SynchronousRow>(conn)
            .map(|r| r.synchronous),
    }
}

// ---------------------------------------------------------------------------
// The pool
// ---------------------------------------------------------------------------

/// An r2d2 manager that opens [`LabConn`]s with one policy.
#[derive(Debug, Clone)]
pub struct LabManager {
    target: DbTarget,
    policy: Arc<Policy>,
}

impl LabManager {
    pub fn new(target: DbTarget, policy: Policy) -> LabManager {
        LabManager {
            target,
            policy: Arc::new(policy),
        }
    }
}

impl ManageConnection for LabManager {
    type Connection = LabConn;
    type Error = OpenError;

    fn connect(&self) -> Result<LabConn, OpenError> {
        LabConn::open(&self.target, self.policy.clone(), false)
    }

    fn is_valid(&self, conn: &mut LabConn) -> Result<(), OpenError> {
        if conn.in_transaction() {
            // A connection must come back from its user with no open transaction.
            conn.rollback_after_failure();
        }
        Ok(())
    }

    fn has_broken(&self, conn: &mut LabConn) -> bool {
        conn.in_transaction()
    }
}

pub type Pool = r2d2::Pool<LabManager>;
pub type PooledConn = r2d2::PooledConnection<LabManager>;

/// Builds the pool every daemon uses. Connections are opened with `mode=rw`.
pub fn build_pool(target: &DbTarget, policy: Policy, max_size: u32) -> Result<Pool, String> {
    r2d2::Pool::builder()
        .max_size(max_size)
        .min_idle(Some(1))
        .connection_timeout(Duration::from_secs(30))
        .test_on_check_out(true)
        .build(LabManager::new(target.clone(), policy))
        .map_err(|e| format!("opening a pool on {}: {e}", target.path().display()))
}
