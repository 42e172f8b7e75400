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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use diesel::connection::{Instrumentation, InstrumentationEvent, SimpleConnection};
use diesel::prelude::*;
use diesel::r2d2::{self, ManageConnection};
use diesel::sql_types::Text;
use diesel::sqlite::SqliteConnection;
use libsqlite3_sys as ffi;

use crate::error::{DbError, LockClass, Phase, TxError};
use crate::settings::{Synchronous, TxnMode};
use crate::types::now_micros;

/// The connection policy applied on every connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub busy_timeout: Duration,
    pub synchronous: Synchronous,
    pub txn_mode: TxnMode,
    /// App work inside each write transaction (`LAB_TXN_WORK`), before COMMIT.
    pub txn_work: Duration,
    /// Set at shutdown: busy handlers give up and retry loops end.
    pub stop: StopFlag,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            busy_timeout: Duration::from_secs(5),
            synchronous: Synchronous::Full,
            txn_mode: TxnMode::Deferred,
            txn_work: Duration::ZERO,
            stop: StopFlag::default(),
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
    /// Parses `DATABASE_URL`: a path, or an `sqlite:` URL in dj-database-url's
    /// forms (`sqlite:////abs/path`, `sqlite:///rel/path`).
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
        // dj-database-url's forms: `sqlite:////abs/path` (absolute: the
        // fourth slash is the path's), `sqlite:///rel/path` (relative), and
        // the shorter `sqlite://path` and `sqlite:path`.
        let path = url
            .strip_prefix("sqlite:///")
            .or_else(|| url.strip_prefix("sqlite://"))
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        if path.is_empty() {
            return Err(format!("{url}: the URL names no file"));
        }
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
/// which at least one connection of the process waited in the busy handler.
/// `lock_wait_share` divides it by the elapsed time, so several threads waiting
/// at once do not count twice. A wait ends when the handler's last sleep ended
/// (SQLite then got the lock), not when the statement finished: the statement's
/// own run and its fsync after the lock was taken are not waiting.
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

/// Leaves the union at `at`, which may lie a little in the past (the end of
/// the handler's last sleep).
fn wait_leave(at: Instant) {
    let mut u = lock(&WAIT_UNION);
    u.waiters = u.waiters.saturating_sub(1);
    if u.waiters == 0 {
        if let Some(since) = u.since.take() {
            u.total += at.saturating_duration_since(since);
        }
    }
}

/// Wall time during which at least one connection of this process waited for
/// a lock in the busy handler, since the process started.
pub fn process_lock_wait() -> Duration {
    let u = lock(&WAIT_UNION);
    u.total + u.since.map(|s| s.elapsed()).unwrap_or_default()
}

/// SQLite's default busy-callback schedule (`sqliteDefaultBusyCallback` in
/// main.c), in ms, and the running totals of those delays.
const DELAYS_MS: [u64; 12] = [1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100];
const TOTALS_MS: [u64; 12] = [0, 1, 3, 8, 18, 33, 53, 78, 103, 128, 178, 228];

/// SQLite's own rule: the `count`-th call (from 0) sleeps the next nominal
/// delay, cut so that the nominal delays never sum past the timeout; None
/// when the timeout is spent (give up). Like SQLite, it counts nominal delays,
/// not the clock: a sleep that oversleeps on a loaded machine does not make
/// the handler give up sooner.
pub fn sqlite_busy_delay(count: u32, timeout: Duration) -> Option<Duration> {
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    let n = DELAYS_MS.len();
    let c = count as usize;
    let (delay, prior) = if c < n {
        (DELAYS_MS[c], TOTALS_MS[c])
    } else {
        let delay = DELAYS_MS[n - 1];
        (delay, TOTALS_MS[n - 1] + delay * (c - (n - 1)) as u64)
    };
    let delay = if prior + delay > timeout_ms {
        timeout_ms.saturating_sub(prior)
    } else {
        delay
    };
    (delay > 0).then(|| Duration::from_millis(delay))
}

/// What the busy handler did during the current statement.
#[derive(Debug, Clone, Copy, Default)]
pub struct BusyRecord {
    /// Times the handler ran.
    pub calls: u32,
    /// Whether it gave up (returned 0).
    pub gave_up: bool,
    /// Wall time waited in the handler, all lock events of the statement
    /// together, each from its first call to the end of its last sleep.
    pub waited: Duration,
}

#[derive(Debug, Default)]
struct StmtState {
    started_wall: i64,
    calls: u32,
    gave_up: bool,
    /// Waits of the statement's finished lock events.
    waited_before_event: Duration,
    /// The current lock event: its first call, and the end of its last sleep.
    event_start: Option<Instant>,
    event_last_wake: Option<Instant>,
    last_wake_wall: Option<i64>,
    /// A lock wait of this statement is counted in the process's wait union.
    in_wait: bool,
    /// The code read by diesel's FinishQuery instrumentation event, which diesel
    /// emits right after a failed `execute`, before it resets the statement
    /// and re-binds its parameters (a bind clears the handle's error code).
    failed_code: Option<c_int>,
}

impl StmtState {
    fn event_waited(&self) -> Duration {
        match (self.event_start, self.event_last_wake) {
            (Some(start), Some(wake)) => wake.saturating_duration_since(start),
            _ => Duration::ZERO,
        }
    }
}

/// The state shared with SQLite's callbacks. Boxed, so its address is stable for
/// the connection's life; the connection is closed before it is dropped.
#[derive(Debug)]
struct Hook {
    timeout: Duration,
    /// Set at shutdown: the handler gives up at its next call, so that no wait
    /// outlives the process's stop (the failure is a real SQLITE_BUSY).
    stop: StopFlag,
    stmt: Mutex<StmtState>,
    /// Wall-clock µs at which the current transaction (or autocommit
    /// statement) first held the write lock.
    acquired: Mutex<Option<i64>>,
    /// Every wait in the handler, for `lock_wait_total_s`.
    total_wait_us: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Hook {
    fn new(timeout: Duration, stop: StopFlag) -> Hook {
        Hook {
            timeout,
            stop,
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

    /// Closes the current lock event: its wait joins the statement's, the
    /// connection's total and (at the end of its last sleep) the union.
    fn close_event(&self, st: &mut StmtState, at: Option<Instant>) {
        let waited = st.event_waited();
        st.waited_before_event += waited;
        self.add_wait(waited);
        if st.in_wait {
            st.in_wait = false;
            let leave = at
                .or(st.event_last_wake)
                .or(st.event_start)
                .unwrap_or_else(Instant::now);
            wait_leave(leave);
        }
        st.event_start = None;
        st.event_last_wake = None;
    }

    /// Returns 1 to make SQLite try again, 0 to give up.
    fn on_busy(&self, count: c_int) -> c_int {
        let now = Instant::now();
        let mut st = lock(&self.stmt);
        st.calls = st.calls.saturating_add(1);
        if count == 0 || st.event_start.is_none() {
            // A new lock event (SQLite counts calls from 0 per event).
            if st.event_start.is_some() {
                self.close_event(&mut st, None);
            }
            st.event_start = Some(now);
            st.event_last_wake = Some(now);
            st.in_wait = true;
            wait_enter(now);
        }
        let count = u32::try_from(count.max(0)).unwrap_or(u32::MAX);
        let delay = if self.stop.is_set() {
            None
        } else {
            sqlite_busy_delay(count, self.timeout)
        };
        let Some(delay) = delay else {
            st.gave_up = true;
            st.event_last_wake = Some(now);
            self.close_event(&mut st, Some(now));
            return 0;
        };
        drop(st);
        std::thread::sleep(delay);
        let woke = Instant::now();
        let mut st = lock(&self.stmt);
        st.event_last_wake = Some(woke);
        st.last_wake_wall = Some(now_micros());
        1
    }

    fn on_statement_start(&self) {
        let mut st = lock(&self.stmt);
        if st.event_start.is_some() {
            self.close_event(&mut st, None);
        }
        *st = StmtState {
            started_wall: now_micros(),
            ..StmtState::default()
        };
    }

    fn on_statement_end(&self, holds_write_lock: bool) {
        let mut st = lock(&self.stmt);
        if st.event_start.is_some() {
            self.close_event(&mut st, None);
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

    /// The connection waits while it holds the write lock (to commit): the
    /// hold began when it got RESERVED, at the end of the statement's last
    /// earlier wait, or at the statement's start if it did not wait for it;
    /// unless something earlier was noted.
    fn note_holding_while_waiting(&self) {
        let started = {
            let st = lock(&self.stmt);
            st.last_wake_wall.unwrap_or(st.started_wall)
        };
        let mut acquired = lock(&self.acquired);
        if acquired.is_none() {
            *acquired = Some(started);
        }
    }

    fn record(&self) -> BusyRecord {
        let st = lock(&self.stmt);
        BusyRecord {
            calls: st.calls,
            gave_up: st.gave_up,
            waited: st.waited_before_event + st.event_waited(),
        }
    }

    fn failed_code(&self) -> Option<c_int> {
        lock(&self.stmt).failed_code
    }

    fn on_failed_query(&self, code: c_int) {
        lock(&self.stmt).failed_code = Some(code);
    }
}

/// A flag shared by a process's connections and its operations: set at
/// shutdown, it ends retry loops and makes busy handlers give up.
#[derive(Debug, Clone, Default)]
pub struct StopFlag(pub Arc<AtomicBool>);

impl StopFlag {
    pub fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl PartialEq for StopFlag {
    /// Policies compare by their knobs; the flag is not a knob.
    fn eq(&self, _: &StopFlag) -> bool {
        true
    }
}

/// The busy handler's context: the hook, and the handle it waits for (to ask
/// whether that connection already holds the write lock while it waits).
struct BusyCtx {
    hook: *const Hook,
    db: *mut ffi::sqlite3,
}

unsafe extern "C" fn busy_handler(ctx: *mut c_void, count: c_int) -> c_int {
    // SAFETY: ctx is the BusyCtx owned by the LabConn whose handle is calling;
    // the handle is closed before the context is dropped.
    let ctx = unsafe { &*(ctx as *const BusyCtx) };
    // SAFETY: as above, for the hook inside it.
    let hook = unsafe { &*ctx.hook };
    // A connection that holds RESERVED and waits to commit (for PENDING, then
    // EXCLUSIVE) holds the write lock during the whole wait, even if its
    // statement then fails: its hold began when its write statement did.
    // SAFETY: the handle is live; sqlite3_txn_state only reads its state (the
    // db mutex is recursive, and held by the caller).
    let writing =
        unsafe { ffi::sqlite3_txn_state(ctx.db, std::ptr::null()) == ffi::SQLITE_TXN_WRITE };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if writing {
            hook.note_holding_while_waiting();
        }
        hook.on_busy(count)
    }))
    .unwrap_or(0)
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

/// The busy handler's context, boxed beside the connection.
struct BusyCtxBox(BusyCtx);

// SAFETY: the pointers target the LabConn's own hook and handle, which move
// with it and are used only by the thread holding the LabConn.
unsafe impl Send for BusyCtxBox {}

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
/// its busy-handler state, side by side, plus the state of its transaction.
pub struct LabConn {
    // Field order matters: the diesel connection (which closes the handle) is
    // dropped before the hook that the handle's callbacks point to.
    conn: SqliteConnection,
    raw: RawDb,
    /// The busy handler's context: kept alive as long as the handle.
    _busy_ctx: Box<BusyCtxBox>,
    hook: Box<Hook>,
    policy: Arc<Policy>,
    /// Django's manual-transaction mode (autocommit off, as Toaster's
    /// buildinfohelper runs after its first sync): a block with no transaction
    /// open begins one with SAVEPOINT, which SQLite always begins deferred, and
    /// a bare statement begins one implicitly that stays open until
    /// [`LabConn::sync`].
    manual: bool,
    /// Savepoints open inside the current transaction.
    depth: u32,
    /// The id of the open transaction (0 when none), for the trace.
    txn: u64,
    txn_seq: u64,
    /// Rows written inside the open transaction, by operation, not committed yet.
    pending: Vec<(&'static str, u64)>,
}

impl std::fmt::Debug for LabConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabConn")
            .field("policy", &self.policy)
            .field("manual", &self.manual)
            .field("txn", &self.txn)
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

/// When an attempt waited, held the write lock and ended, and in which
/// transaction.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttemptTimes {
    /// Wall-clock µs when the attempt began waiting (BEGIN or the statement).
    pub started: i64,
    /// Wall-clock µs when the write lock was really obtained, if it was during
    /// this attempt (for a transaction: the moment its first write returned).
    pub acquired: Option<i64>,
    /// Wall-clock µs when the attempt ended.
    pub ended: i64,
    /// The transaction the attempt ran in (0: an autocommit statement).
    pub txn: u64,
    /// The attempt was a savepoint inside a transaction that stays open.
    pub nested: bool,
}

/// Rows that became durable with a commit, by the operation that wrote them.
pub type Committed = Vec<(&'static str, u64)>;

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

    /// Runs a write and counts the rows SQLite reports it changed.
    pub fn counted(
        &mut self,
        write: impl FnOnce(&mut SqliteConnection) -> QueryResult<usize>,
    ) -> QueryResult<usize> {
        let n = write(self.conn)?;
        self.rows += n as u64;
        Ok(n)
    }

    /// Runs an insert that returns the new row's id; one row is counted.
    pub fn inserted<T>(
        &mut self,
        insert: impl FnOnce(&mut SqliteConnection) -> QueryResult<T>,
    ) -> QueryResult<T> {
        let v = insert(self.conn)?;
        self.rows += 1;
        Ok(v)
    }
}

/// An open atomic block: a transaction (BEGIN or the outermost SAVEPOINT) or a
/// savepoint inside one. Ended by [`LabConn::end_block`].
#[derive(Debug)]
#[must_use = "a block must be ended with end_block"]
pub struct Block {
    savepoint: Option<String>,
    /// The block began the transaction (BEGIN or the outermost SAVEPOINT).
    outermost: bool,
    started: i64,
    acquired_before: Option<i64>,
}

impl Block {
    pub fn is_nested(&self) -> bool {
        !self.outermost
    }

    /// When the transaction held the write lock before this block began.
    pub fn acquired_before(&self) -> Option<i64> {
        self.acquired_before
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
        let hook = Box::new(Hook::new(policy.busy_timeout, policy.stop.clone()));
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
            _busy_ctx: busy_ctx,
            hook,
            policy,
            manual: false,
            depth: 0,
            txn: 0,
            txn_seq: 0,
            pending: Vec::new(),
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
    /// `check`). Writes go through the entry points below.
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

    /// Whether a transaction is open on this connection (SQLite's own view).
    pub fn in_transaction(&self) -> bool {
        // SAFETY: the handle is live while self is.
        unsafe { ffi::sqlite3_get_autocommit(self.raw.0) == 0 }
    }

    /// Whether the open transaction holds (or is committing with) the write
    /// lock: SQLITE_TXN_WRITE.
    pub fn holds_write_lock(&self) -> bool {
        // SAFETY: the handle is live while self is.
        unsafe { ffi::sqlite3_txn_state(self.raw.0, std::ptr::null()) == ffi::SQLITE_TXN_WRITE }
    }

    /// The open transaction's id (0 when none).
    pub fn txn_id(&self) -> u64 {
        if self.in_transaction() {
            self.txn
        } else {
            0
        }
    }

    /// Switches Django's manual-transaction mode on or off (see the field).
    pub fn set_manual(&mut self, manual: bool) {
        self.manual = manual;
    }

    pub fn is_manual(&self) -> bool {
        self.manual
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

    fn acquired(&self) -> Option<i64> {
        *lock(&self.hook.acquired)
    }

    /// Wall-clock µs at which the open transaction (or the last autocommit
    /// statement) first held the write lock, if it did.
    pub fn lock_acquired_at(&self) -> Option<i64> {
        self.acquired()
    }

    fn times(&self, started: i64, acquired_before: Option<i64>, nested: bool) -> AttemptTimes {
        let acquired = self.acquired();
        AttemptTimes {
            started,
            // a nested attempt reports the lock only if it took it itself
            acquired: if nested && acquired_before.is_some() {
                None
            } else {
                acquired
            },
            ended: now_micros(),
            txn: self.txn,
            nested,
        }
    }

    fn new_txn(&mut self) {
        self.txn_seq += 1;
        self.txn = self.txn_seq;
        self.depth = 0;
        *lock(&self.hook.acquired) = None;
    }

    /// Ends whatever is open with ROLLBACK, forgetting its pending rows.
    fn rollback_all(&mut self) {
        if self.in_transaction() {
            if let Err(e) = self.conn.batch_execute("ROLLBACK") {
                log::warn!("rollback after a failed attempt failed too: {e}");
            }
        }
        self.depth = 0;
        self.pending.clear();
    }

    /// Opens an atomic block, as Django's `atomic()` does: inside an open
    /// transaction a SAVEPOINT; in manual mode with none open, a SAVEPOINT
    /// (SQLite begins a deferred transaction); else BEGIN as the policy's
    /// transaction mode says.
    pub fn begin_block(&mut self) -> Result<Block, DbError> {
        let started = now_micros();
        let open = self.in_transaction();
        if !open {
            self.depth = 0;
            self.pending.clear();
        }
        if open || self.manual {
            if !open {
                self.new_txn();
            }
            let acquired_before = self.acquired();
            let name = format!("lab_sp{}", self.depth);
            self.conn
                .batch_execute(&format!("SAVEPOINT {name}"))
                .map_err(|e| self.classify(Phase::Begin, &e))?;
            self.depth += 1;
            return Ok(Block {
                savepoint: Some(name),
                outermost: !open,
                started,
                acquired_before,
            });
        }
        self.new_txn();
        let begin = match self.policy.txn_mode {
            TxnMode::Deferred => "BEGIN DEFERRED",
            TxnMode::Immediate => "BEGIN IMMEDIATE",
        };
        match self.conn.batch_execute(begin) {
            Ok(()) => Ok(Block {
                savepoint: None,
                outermost: true,
                started,
                acquired_before: None,
            }),
            Err(e) => {
                let err = self.classify(Phase::Begin, &e);
                self.rollback_all();
                Err(err)
            }
        }
    }

    /// Ends a block. `commit` true releases the savepoint or commits; if that
    /// fails, the block is rolled back (as Django's `atomic()` does) and the
    /// error returned. `commit` false rolls the block back. Returns the rows
    /// that became durable.
    pub fn end_block(&mut self, block: Block, commit: bool) -> Result<Committed, DbError> {
        let _ = block.started;
        match (&block.savepoint, commit) {
            (Some(name), true) => {
                if block.outermost && !self.policy.txn_work.is_zero() {
                    std::thread::sleep(self.policy.txn_work);
                }
                match self.conn.batch_execute(&format!("RELEASE {name}")) {
                    Ok(()) => {
                        self.depth = self.depth.saturating_sub(1);
                        if self.in_transaction() {
                            Ok(Vec::new())
                        } else {
                            Ok(std::mem::take(&mut self.pending))
                        }
                    }
                    Err(e) => {
                        let phase = if block.outermost {
                            Phase::Commit
                        } else {
                            Phase::Body
                        };
                        let err = self.classify(phase, &e);
                        self.rollback_savepoint(name, block.outermost);
                        Err(err)
                    }
                }
            }
            (Some(name), false) => {
                self.rollback_savepoint(name, block.outermost);
                Ok(Vec::new())
            }
            (None, true) => {
                if !self.policy.txn_work.is_zero() {
                    // LAB_TXN_WORK: a slower stack's time inside the transaction.
                    std::thread::sleep(self.policy.txn_work);
                }
                match self.conn.batch_execute("COMMIT") {
                    Ok(()) => Ok(std::mem::take(&mut self.pending)),
                    Err(e) => {
                        let err = self.classify(Phase::Commit, &e);
                        self.rollback_all();
                        Err(err)
                    }
                }
            }
            (None, false) => {
                self.rollback_all();
                Ok(Vec::new())
            }
        }
    }

    /// ROLLBACK TO and RELEASE a savepoint (Django's savepoint rollback); the
    /// rows written since it began are dropped from the pending ones.
    fn rollback_savepoint(&mut self, name: &str, outermost: bool) {
        if self.in_transaction() {
            if let Err(e) = self
                .conn
                .batch_execute(&format!("ROLLBACK TO {name}; RELEASE {name}"))
            {
                log::warn!("rolling back to savepoint {name} failed: {e}");
                if outermost {
                    self.rollback_all();
                }
            }
        }
        self.depth = self.depth.saturating_sub(1);
        if outermost || !self.in_transaction() {
            self.pending.clear();
        }
    }

    /// One attempt at an atomic block: [`LabConn::begin_block`], `body`, then
    /// [`LabConn::end_block`]. Inside an open transaction it is a savepoint,
    /// so a failure rolls back only the savepoint and the transaction stays
    /// open. The class is read before any rollback. Retries and counting are
    /// the caller's ([`crate::ops`]).
    pub fn write_txn<T>(
        &mut self,
        op: &'static str,
        body: &mut dyn FnMut(&mut Tx<'_>) -> Result<T, TxError>,
    ) -> Result<(T, Committed, AttemptTimes), AttemptError> {
        let nested_at_start = self.in_transaction();
        let started = now_micros();
        if !nested_at_start {
            *lock(&self.hook.acquired) = None;
        }
        let fail = |conn: &LabConn, error: AttemptFailure, acquired_before| AttemptError {
            error,
            times: conn.times(started, acquired_before, nested_at_start),
            rows: 0,
        };
        let block = match self.begin_block() {
            Ok(b) => b,
            Err(err) => return Err(fail(self, AttemptFailure::Db(err), None)),
        };
        let acquired_before = block.acquired_before;
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
                let times = self.times(started, acquired_before, nested_at_start);
                let _ = self.end_block(block, false);
                return Err(AttemptError {
                    error: AttemptFailure::Db(err),
                    times,
                    rows: 0,
                });
            }
            Err(TxError::Abort(reason)) => {
                let _ = self.end_block(block, false);
                return Err(fail(self, AttemptFailure::Aborted(reason), acquired_before));
            }
        };
        if rows > 0 {
            self.pending.push((op, rows));
        }
        match self.end_block(block, true) {
            Ok(committed) => Ok((
                value,
                committed,
                self.times(started, acquired_before, nested_at_start),
            )),
            Err(err) => Err(fail(self, AttemptFailure::Db(err), acquired_before)),
        }
    }

    /// Begins a transaction as the policy says and leaves it open, for code that
    /// must split one transaction over several steps (a test interleaving two
    /// schedulers' claim phases). Pair with [`LabConn::commit`] or
    /// [`LabConn::rollback`].
    pub fn begin(&mut self) -> Result<(), DbError> {
        // The block is ended by commit() or rollback(), which end whatever
        // transaction is open.
        let _ = self.begin_block()?;
        Ok(())
    }

    /// Commits the open transaction (of [`LabConn::begin`] or an implicit
    /// one); rolls back if the commit fails.
    pub fn commit(&mut self) -> Result<Committed, DbError> {
        match self.conn.batch_execute("COMMIT") {
            Ok(()) => {
                self.depth = 0;
                Ok(std::mem::take(&mut self.pending))
            }
            Err(e) => {
                let err = self.classify(Phase::Commit, &e);
                self.rollback_all();
                Err(err)
            }
        }
    }

    /// Django's sync in manual mode (`set_autocommit(True)` then `False`):
    /// COMMIT if a transaction is open. A failed COMMIT is **not** rolled
    /// back: the transaction stays open, holding its locks, and the next
    /// sync tries again. Switches manual mode on. Returns the rows that became
    /// durable, and the times of the attempt when there was one.
    pub fn sync(&mut self) -> Result<Option<(Committed, AttemptTimes)>, (DbError, AttemptTimes)> {
        self.manual = true;
        if !self.in_transaction() {
            self.pending.clear();
            return Ok(None);
        }
        let started = now_micros();
        match self.conn.batch_execute("COMMIT") {
            Ok(()) => {
                self.depth = 0;
                let times = self.times(started, None, false);
                Ok(Some((std::mem::take(&mut self.pending), times)))
            }
            Err(e) => {
                let err = self.classify(Phase::Commit, &e);
                Err((err, self.times(started, None, false)))
            }
        }
    }

    /// Rolls back an open transaction, if any (its pending rows are lost).
    pub fn rollback(&mut self) {
        self.rollback_all();
    }

    /// Rows written inside the open transaction and not committed yet.
    pub fn pending_rows(&self) -> u64 {
        self.pending.iter().map(|(_, n)| n).sum()
    }

    /// One attempt of statements with no block of their own: each autocommits
    /// when no transaction is open; inside an open transaction they join it.
    /// In manual mode with none open, the first statement begins one
    /// implicitly (Python's sqlite3 issues BEGIN before a write, as the policy's
    /// transaction mode says), and it stays open until [`LabConn::sync`].
    pub fn autocommit<T>(
        &mut self,
        op: &'static str,
        body: &mut dyn FnMut(&mut Tx<'_>) -> Result<T, TxError>,
    ) -> Result<(T, Committed, AttemptTimes), AttemptError> {
        let started = now_micros();
        let was_open = self.in_transaction();
        if !was_open {
            self.pending.clear();
            self.depth = 0;
            if self.manual {
                self.new_txn();
                let begin = match self.policy.txn_mode {
                    TxnMode::Deferred => "BEGIN",
                    TxnMode::Immediate => "BEGIN IMMEDIATE",
                };
                if let Err(e) = self.conn.batch_execute(begin) {
                    let err = self.classify(Phase::Begin, &e);
                    self.rollback_all();
                    return Err(AttemptError {
                        error: AttemptFailure::Db(err),
                        times: self.times(started, None, false),
                        rows: 0,
                    });
                }
            } else {
                self.txn = 0;
                *lock(&self.hook.acquired) = None;
            }
        }
        let joins = self.in_transaction();
        let acquired_before = if joins { self.acquired() } else { None };
        let mut tx = Tx {
            conn: &mut self.conn,
            rows: 0,
        };
        let result = body(&mut tx);
        let rows = tx.rows;
        // Rows of statements that ran inside a transaction wait for its
        // commit; autocommitted ones are durable now.
        let committed: Committed = if joins {
            if rows > 0 {
                self.pending.push((op, rows));
            }
            Vec::new()
        } else if rows > 0 {
            vec![(op, rows)]
        } else {
            Vec::new()
        };
        let times = |conn: &LabConn| conn.times(started, acquired_before, was_open);
        match result {
            Ok(v) => Ok((v, committed, times(self))),
            Err(TxError::Db(e)) => {
                let err = self.classify(Phase::Autocommit, &e);
                Err(AttemptError {
                    error: AttemptFailure::Db(err),
                    times: times(self),
                    rows: committed.iter().map(|(_, n)| n).sum(),
                })
            }
            Err(TxError::Abort(reason)) => Err(AttemptError {
                error: AttemptFailure::Aborted(reason),
                times: times(self),
                rows: committed.iter().map(|(_, n)| n).sum(),
            }),
        }
    }

    /// One read-only attempt (SELECTs; inside the open transaction if any).
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
            conn.rollback_all();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_in_dj_database_url_forms() {
        let p = |u: &str| DbTarget::parse(u).map(|t| t.path().to_path_buf());
        assert_eq!(
            p("sqlite:////srv/app/db.sqlite3"),
            Ok(PathBuf::from("/srv/app/db.sqlite3"))
        );
        assert_eq!(p("sqlite:///db.sqlite3"), Ok(PathBuf::from("db.sqlite3")));
        assert_eq!(p("sqlite://db.sqlite3"), Ok(PathBuf::from("db.sqlite3")));
        assert_eq!(p("sqlite:db.sqlite3"), Ok(PathBuf::from("db.sqlite3")));
        assert_eq!(p("/tmp/x.sqlite3"), Ok(PathBuf::from("/tmp/x.sqlite3")));
        assert!(p("sqlite:///").is_err());
        assert!(p("sqlite://:memory:").is_err());
        let uri = DbTarget::parse("sqlite:////srv/app/db.sqlite3").map(|t| t.uri(false));
        assert_eq!(uri.as_deref(), Ok("file:/srv/app/db.sqlite3?mode=rw"));
    }

    /// The handler follows sqliteDefaultBusyCallback: the nominal delays never
    /// sum past the timeout, the last one is cut to fit, then it gives up.
    #[test]
    fn busy_delays_follow_sqlites_rule() {
        let timeout = Duration::from_millis(500);
        let mut sum = Duration::ZERO;
        let mut calls = 0;
        while let Some(d) = sqlite_busy_delay(calls, timeout) {
            sum += d;
            calls += 1;
            assert!(calls < 1000);
        }
        assert_eq!(sum, timeout, "the delays add up to the timeout exactly");
        // 1+2+5+10+15+20+25+25+25+50+50+100 = 328, then 100 and the last 72
        assert_eq!(calls, 14);
        assert_eq!(
            sqlite_busy_delay(0, timeout),
            Some(Duration::from_millis(1))
        );
        assert_eq!(
            sqlite_busy_delay(12, timeout),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            sqlite_busy_delay(13, timeout),
            Some(Duration::from_millis(72))
        );
        assert_eq!(sqlite_busy_delay(0, Duration::ZERO), None);
        let mut sum = Duration::ZERO;
        let mut c = 0;
        while let Some(d) = sqlite_busy_delay(c, Duration::from_secs(20)) {
            sum += d;
            c += 1;
        }
        assert_eq!(sum, Duration::from_secs(20));
    }
}
