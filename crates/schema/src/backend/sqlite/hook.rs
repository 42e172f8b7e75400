//! The busy handler, the statement hooks and the auto extension that hands
//! the lab each connection's raw handle (see the module's doc).

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use diesel::connection::{Instrumentation, InstrumentationEvent};
use libsqlite3_sys as ffi;

use crate::settings::BusyWait;
use crate::types::now_micros;

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
pub(super) struct WaitUnion {
    waiters: u32,
    since: Option<Instant>,
    total: Duration,
}

pub(super) static WAIT_UNION: Mutex<WaitUnion> = Mutex::new(WaitUnion {
    waiters: 0,
    since: None,
    total: Duration::ZERO,
});

pub(super) fn wait_enter(now: Instant) {
    let mut u = lock(&WAIT_UNION);
    if u.waiters == 0 {
        u.since = Some(now);
    }
    u.waiters += 1;
}

/// Leaves the union at `at`, which may lie a little in the past (the end of
/// the handler's last sleep).
pub(super) fn wait_leave(at: Instant) {
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
pub(super) const DELAYS_MS: [u64; 12] = [1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100];
pub(super) const TOTALS_MS: [u64; 12] = [0, 1, 3, 8, 18, 33, 53, 78, 103, 128, 178, 228];

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

/// The sleep before the next retry under `wait`, or None to give up: the
/// `count`-th call (from 0) of a lock event that began `waited` ago.
/// `sqlite` follows [`sqlite_busy_delay`]; `fair` sleeps its interval until
/// the clock passes the timeout, the last sleep cut to what is left. (Its
/// sleeps are too short to count nominally: each oversleeps by the kernel's
/// timer slack, tens of µs.)
pub fn busy_delay(
    wait: BusyWait,
    count: u32,
    waited: Duration,
    timeout: Duration,
) -> Option<Duration> {
    match wait {
        BusyWait::Sqlite => sqlite_busy_delay(count, timeout),
        BusyWait::Fair(interval) => {
            let left = timeout.saturating_sub(waited);
            (!left.is_zero()).then(|| interval.min(left))
        }
    }
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
pub(super) struct StmtState {
    pub(super) started_wall: i64,
    pub(super) calls: u32,
    pub(super) gave_up: bool,
    /// Waits of the statement's finished lock events.
    pub(super) waited_before_event: Duration,
    /// The current lock event: its first call, and the end of its last sleep.
    pub(super) event_start: Option<Instant>,
    pub(super) event_last_wake: Option<Instant>,
    pub(super) last_wake_wall: Option<i64>,
    /// A lock wait of this statement is counted in the process's wait union.
    pub(super) in_wait: bool,
    /// The code read by diesel's FinishQuery instrumentation event, which diesel
    /// emits right after a failed `execute`, before it resets the statement
    /// and re-binds its parameters (a bind clears the handle's error code).
    pub(super) failed_code: Option<c_int>,
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
pub(super) struct Hook {
    pub(super) timeout: Duration,
    pub(super) wait: BusyWait,
    /// Set at shutdown: the handler gives up at its next call, so that no wait
    /// outlives the process's stop (the failure is a real SQLITE_BUSY).
    pub(super) stop: StopFlag,
    pub(super) stmt: Mutex<StmtState>,
    /// Wall-clock µs at which the current transaction (or autocommit
    /// statement) first held the write lock.
    pub(super) acquired: Mutex<Option<i64>>,
    /// Every wait in the handler, for `lock_wait_total_s`.
    pub(super) total_wait_us: AtomicU64,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Hook {
    pub(super) fn new(timeout: Duration, wait: BusyWait, stop: StopFlag) -> Hook {
        Hook {
            timeout,
            wait,
            stop,
            stmt: Mutex::new(StmtState::default()),
            acquired: Mutex::new(None),
            total_wait_us: AtomicU64::new(0),
        }
    }

    pub(super) fn add_wait(&self, d: Duration) {
        self.total_wait_us.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Closes the current lock event: its wait joins the statement's, the
    /// connection's total and (at the end of its last sleep) the union.
    pub(super) fn close_event(&self, st: &mut StmtState, at: Option<Instant>) {
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
    pub(super) fn on_busy(&self, count: c_int) -> c_int {
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
        let waited = st
            .event_start
            .map(|start| now.saturating_duration_since(start))
            .unwrap_or_default();
        let delay = if self.stop.is_set() {
            None
        } else {
            busy_delay(self.wait, count, waited, self.timeout)
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

    pub(super) fn on_statement_start(&self) {
        let mut st = lock(&self.stmt);
        if st.event_start.is_some() {
            self.close_event(&mut st, None);
        }
        *st = StmtState {
            started_wall: now_micros(),
            ..StmtState::default()
        };
    }

    pub(super) fn on_statement_end(&self, holds_write_lock: bool) {
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
    pub(super) fn note_holding_while_waiting(&self) {
        let started = {
            let st = lock(&self.stmt);
            st.last_wake_wall.unwrap_or(st.started_wall)
        };
        let mut acquired = lock(&self.acquired);
        if acquired.is_none() {
            *acquired = Some(started);
        }
    }

    pub(super) fn record(&self) -> BusyRecord {
        let st = lock(&self.stmt);
        BusyRecord {
            calls: st.calls,
            gave_up: st.gave_up,
            waited: st.waited_before_event + st.event_waited(),
        }
    }

    pub(super) fn failed_code(&self) -> Option<c_int> {
        lock(&self.stmt).failed_code
    }

    pub(super) fn on_failed_query(&self, code: c_int) {
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
pub(super) struct BusyCtx {
    pub(super) hook: *const Hook,
    pub(super) db: *mut ffi::sqlite3,
}

pub(super) unsafe extern "C" fn busy_handler(ctx: *mut c_void, count: c_int) -> c_int {
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

pub(super) unsafe extern "C" fn trace_hook(
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
pub(super) fn is_success(code: c_int) -> bool {
    matches!(code, ffi::SQLITE_OK | ffi::SQLITE_ROW | ffi::SQLITE_DONE)
}

thread_local! {
    pub(super) static LAST_OPENED: Cell<*mut ffi::sqlite3> = const { Cell::new(std::ptr::null_mut()) };
}

pub(super) unsafe extern "C" fn note_opened(
    db: *mut ffi::sqlite3,
    _err: *mut *mut c_char,
    _api: *const ffi::sqlite3_api_routines,
) -> c_int {
    LAST_OPENED.with(|slot| slot.set(db));
    ffi::SQLITE_OK
}

pub(super) fn register_auto_extension() -> Result<(), String> {
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
pub(super) struct CodeCapture {
    pub(super) raw: RawDb,
    pub(super) hook: HookPtr,
}

pub(super) struct HookPtr(pub(super) *const Hook);

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
pub(super) struct BusyCtxBox(pub(super) BusyCtx);

// SAFETY: the pointers target the LabConn's own hook and handle, which move
// with it and are used only by the thread holding the LabConn.
unsafe impl Send for BusyCtxBox {}

/// The raw handle of a live connection. Used only by the thread that owns the
/// `LabConn`.
#[derive(Debug)]
pub(super) struct RawDb(pub(super) *mut ffi::sqlite3);

// SAFETY: the handle moves with its SqliteConnection (which is Send) and is only
// used by whichever single thread holds the LabConn.
unsafe impl Send for RawDb {}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// `fair` sleeps its interval whatever the count, cuts the last sleep to
    /// the time left, and gives up once the clock reaches the timeout;
    /// `sqlite` is SQLite's rule.
    #[test]
    fn fair_busy_delays_keep_their_interval_until_the_timeout() {
        let timeout = Duration::from_millis(500);
        let fair = BusyWait::Fair(Duration::from_micros(100));
        let us = Duration::from_micros;
        assert_eq!(busy_delay(fair, 0, Duration::ZERO, timeout), Some(us(100)));
        assert_eq!(
            busy_delay(fair, 4000, Duration::from_millis(400), timeout),
            Some(us(100)),
            "an old waiter sleeps no longer than a new one"
        );
        assert_eq!(
            busy_delay(fair, 10, timeout - us(30), timeout),
            Some(us(30))
        );
        assert_eq!(busy_delay(fair, 10, timeout, timeout), None);
        assert_eq!(busy_delay(fair, 0, Duration::ZERO, Duration::ZERO), None);
        assert_eq!(
            busy_delay(BusyWait::Sqlite, 12, Duration::ZERO, timeout),
            sqlite_busy_delay(12, timeout)
        );
    }
}
