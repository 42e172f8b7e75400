//! The presets: named sets of database and strategy knobs.

use std::time::Duration;

use super::*;

// ---------------------------------------------------------------------------
// Presets
// ---------------------------------------------------------------------------

/// A named set of database and strategy knobs. A preset never touches the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    pub name: &'static str,
    pub journal_mode: JournalMode,
    pub busy_timeout: Duration,
    pub synchronous: Synchronous,
    pub txn_mode: TxnMode,
    pub atomic_requests: bool,
    pub retry: RetryPolicy,
    pub claim: ClaimStrategy,
    pub commit: CommitPolicy,
    pub wake: WakeMode,
    pub create_shape: CreateShape,
    /// The pace of the build events (`LAB_EVENT_DELAY`). A preset sets the load
    /// only here, and only to model its stack's pace, like `LAB_TXN_WORK`:
    /// `toaster` paces a 15,000-event build to about a minute, so that the
    /// transaction its buildinfohelper leaves open between syncs spans real
    /// time. None keeps the load's own value.
    pub event_delay: Option<Duration>,
    /// What the tests assert for this preset (present / absent).
    pub asserted: &'static str,
    /// What is also expected, in prose.
    pub expected: &'static str,
}

pub(crate) const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// DESIGN.md's preset table.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "django-default",
        journal_mode: JournalMode::Delete,
        busy_timeout: secs(5),
        synchronous: Synchronous::Full,
        txn_mode: TxnMode::Deferred,
        atomic_requests: false,
        retry: RetryPolicy::None,
        claim: ClaimStrategy::Toaster,
        commit: CommitPolicy::PerEvent,
        wake: WakeMode::Poll,
        create_shape: CreateShape::Lab,
        event_delay: None,
        asserted: "any busy_upgrade or busy_snapshot is in runbuilds' select_environment",
        expected: "runbuilds: busy_upgrade in select_environment when it meets a writer (measured: 0-10 in 15-20 s); webui: busy_timeout under heavy load",
    },
    Preset {
        name: "django-atomic",
        journal_mode: JournalMode::Delete,
        busy_timeout: secs(5),
        synchronous: Synchronous::Full,
        txn_mode: TxnMode::Deferred,
        atomic_requests: true,
        retry: RetryPolicy::None,
        claim: ClaimStrategy::Toaster,
        commit: CommitPolicy::PerEvent,
        wake: WakeMode::Poll,
        create_shape: CreateShape::Lab,
        event_delay: None,
        asserted: "webui: busy_upgrade > 0",
        expected: "runbuilds too, in select_environment",
    },
    Preset {
        name: "django-timeout10",
        journal_mode: JournalMode::Delete,
        busy_timeout: secs(10),
        synchronous: Synchronous::Full,
        txn_mode: TxnMode::Deferred,
        atomic_requests: false,
        retry: RetryPolicy::None,
        claim: ClaimStrategy::Toaster,
        commit: CommitPolicy::PerEvent,
        wake: WakeMode::Poll,
        create_shape: CreateShape::Lab,
        event_delay: None,
        asserted: "(as django-default)",
        expected: "the timeout does not help busy_upgrade; fewer busy_timeout",
    },
    Preset {
        name: "django-wal",
        journal_mode: JournalMode::Wal,
        busy_timeout: secs(5),
        synchronous: Synchronous::Full,
        txn_mode: TxnMode::Deferred,
        atomic_requests: false,
        retry: RetryPolicy::None,
        claim: ClaimStrategy::Toaster,
        commit: CommitPolicy::PerEvent,
        wake: WakeMode::Poll,
        create_shape: CreateShape::Lab,
        event_delay: None,
        asserted: "any busy_upgrade or busy_snapshot is in runbuilds' select_environment",
        expected: "runbuilds: busy_upgrade and busy_snapshot in select_environment; webui rarely fails",
    },
    Preset {
        name: "django-all",
        journal_mode: JournalMode::Wal,
        busy_timeout: secs(10),
        synchronous: Synchronous::Full,
        txn_mode: TxnMode::Deferred,
        atomic_requests: true,
        retry: RetryPolicy::None,
        claim: ClaimStrategy::Toaster,
        commit: CommitPolicy::PerEvent,
        wake: WakeMode::Poll,
        create_shape: CreateShape::Lab,
        event_delay: None,
        asserted: "webui: busy_upgrade + busy_snapshot > 0",
        expected: "runbuilds too, in select_environment",
    },
    Preset {
        name: "toaster",
        journal_mode: JournalMode::Delete,
        busy_timeout: secs(20),
        synchronous: Synchronous::Full,
        txn_mode: TxnMode::Deferred,
        atomic_requests: false,
        retry: RetryPolicy::Toaster,
        claim: ClaimStrategy::Toaster,
        commit: CommitPolicy::Every3Tasks,
        wake: WakeMode::Notify,
        create_shape: CreateShape::Toaster,
        event_delay: Some(Duration::from_millis(4)),
        asserted: "upgrades only in select_environment and save_task; a save gives up only when abandoned at shutdown",
        expected: "Toaster as shipped, varies run to run: buildinfohelper save_task busy_upgrade retried inside its block for tens of seconds while the others' commits wait 20 s (rollback), or a busy_snapshot livelock (WAL); sometimes no collision at all",
    },
    Preset {
        name: "immediate",
        journal_mode: JournalMode::Wal,
        busy_timeout: secs(5),
        synchronous: Synchronous::Normal,
        txn_mode: TxnMode::Immediate,
        atomic_requests: true,
        retry: RetryPolicy::None,
        claim: ClaimStrategy::Single,
        commit: CommitPolicy::PerEvent,
        wake: WakeMode::Poll,
        create_shape: CreateShape::Lab,
        event_delay: None,
        asserted: "busy_upgrade = busy_snapshot = 0 everywhere",
        expected: "",
    },
    Preset {
        name: "robust",
        journal_mode: JournalMode::Wal,
        busy_timeout: secs(5),
        synchronous: Synchronous::Normal,
        txn_mode: TxnMode::Immediate,
        atomic_requests: true,
        retry: RetryPolicy::Backoff,
        claim: ClaimStrategy::Guarded,
        commit: CommitPolicy::Batch(500),
        wake: WakeMode::Poll,
        create_shape: CreateShape::Lab,
        event_delay: None,
        asserted: "busy_upgrade = busy_snapshot = 0; gave_up = 0; every check count 0",
        expected: "busy_timeout only when the disk stalls, then retried",
    },
];

/// The default preset.
pub const DEFAULT_PRESET: &str = "django-default";

/// Passes per notification under `notify`: the 7 fields of Python's
/// `struct_siginfo`, which Toaster's runbuilds loops over.
pub const TOASTER_WAKE_PASSES: u32 = 7;

/// robust's durability trade-off, printed by `locklab presets`.
pub const DURABILITY_NOTE: &str = "synchronous=normal in WAL mode survives a crash of the \
process, but a power loss or an OS crash can lose the last transactions committed before it.";

impl Preset {
    pub fn by_name(name: &str) -> Result<&'static Preset, String> {
        PRESETS
            .iter()
            .find(|p| p.name == name.trim())
            .ok_or_else(|| {
                format!(
                    "unknown preset {:?}; run `locklab presets` to list them: {}",
                    name.trim(),
                    PRESETS
                        .iter()
                        .map(|p| p.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }
}
