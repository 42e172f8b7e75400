//! The presets: named sets of database and strategy knobs.

use std::time::Duration;

use super::*;
use crate::backend::Kind;

// ---------------------------------------------------------------------------
// Presets
// ---------------------------------------------------------------------------

/// A named set of database and strategy knobs. A preset never touches the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    pub name: &'static str,
    /// The backend it is made for. A server preset takes its server from
    /// `--database-url`, else `LAB_POSTGRES_URL` / `LAB_MYSQL_URL`, else a
    /// local server on its standard port ([`Preset::server_url`]).
    pub backend: Kind,
    /// The knobs it sets; the others keep their defaults.
    pub knobs: PresetKnobs,
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

/// The original demo's Django defaults: the base of the `django-*` presets
/// and of `toaster`.
const DJANGO: PresetKnobs = PresetKnobs {
    journal_mode: Some(JournalMode::Delete),
    busy_timeout: Some(secs(5)),
    synchronous: Some(Synchronous::Full),
    txn_mode: Some(TxnMode::Deferred),
    atomic_requests: Some(false),
    retry: Some(RetryPolicy::None),
    claim: Some(ClaimStrategy::Toaster),
    commit: Some(CommitPolicy::PerEvent),
    wake: Some(WakeMode::Poll),
    create_shape: Some(CreateShape::Lab),
    ..UNSET
};

/// IMMEDIATE transactions in WAL: the base of `robust`.
const IMMEDIATE: PresetKnobs = PresetKnobs {
    journal_mode: Some(JournalMode::Wal),
    synchronous: Some(Synchronous::Normal),
    txn_mode: Some(TxnMode::Immediate),
    atomic_requests: Some(true),
    claim: Some(ClaimStrategy::Single),
    ..DJANGO
};

/// `robust`'s strategies on a server, read committed: the base of the
/// server presets (the SQLite knobs stay unset).
const SERVER: PresetKnobs = PresetKnobs {
    busy_timeout: Some(secs(5)),
    isolation: Some(Isolation::ReadCommitted),
    atomic_requests: Some(true),
    retry: Some(RetryPolicy::Backoff),
    claim: Some(ClaimStrategy::Guarded),
    commit: Some(CommitPolicy::Batch(500)),
    wake: Some(WakeMode::Poll),
    create_shape: Some(CreateShape::Lab),
    ..UNSET
};

/// [`SERVER`] on InnoDB tables.
const MYSQL_RC: PresetKnobs = PresetKnobs {
    mysql_engine: Some(MysqlEngine::Innodb),
    ..SERVER
};

/// DESIGN.md's preset table.
pub const PRESETS: &[Preset] = &[
    Preset {
        backend: Kind::Sqlite,
        name: "django-default",
        knobs: DJANGO,
        event_delay: None,
        asserted: "any busy_upgrade or busy_snapshot is in runbuilds' select_environment",
        expected: "runbuilds: busy_upgrade in select_environment when it meets a writer (measured: 0-10 in 15-20 s); webui: busy_timeout under heavy load",
    },
    Preset {
        backend: Kind::Sqlite,
        name: "django-atomic",
        knobs: PresetKnobs {
            atomic_requests: Some(true),
            ..DJANGO
        },
        event_delay: None,
        asserted: "webui: busy_upgrade > 0",
        expected: "runbuilds too, in select_environment",
    },
    Preset {
        backend: Kind::Sqlite,
        name: "django-timeout10",
        knobs: PresetKnobs {
            busy_timeout: Some(secs(10)),
            ..DJANGO
        },
        event_delay: None,
        asserted: "(as django-default)",
        expected: "the timeout does not help busy_upgrade; fewer busy_timeout",
    },
    Preset {
        backend: Kind::Sqlite,
        name: "django-wal",
        knobs: PresetKnobs {
            journal_mode: Some(JournalMode::Wal),
            ..DJANGO
        },
        event_delay: None,
        asserted: "any busy_upgrade or busy_snapshot is in runbuilds' select_environment",
        expected: "runbuilds: busy_upgrade and busy_snapshot in select_environment; webui rarely fails",
    },
    Preset {
        backend: Kind::Sqlite,
        name: "django-all",
        knobs: PresetKnobs {
            journal_mode: Some(JournalMode::Wal),
            busy_timeout: Some(secs(10)),
            atomic_requests: Some(true),
            ..DJANGO
        },
        event_delay: None,
        asserted: "webui: busy_upgrade + busy_snapshot > 0",
        expected: "runbuilds too, in select_environment",
    },
    Preset {
        backend: Kind::Sqlite,
        name: "toaster",
        knobs: PresetKnobs {
            busy_timeout: Some(secs(20)),
            retry: Some(RetryPolicy::Toaster),
            commit: Some(CommitPolicy::Every3Tasks),
            wake: Some(WakeMode::Notify),
            create_shape: Some(CreateShape::Toaster),
            ..DJANGO
        },
        event_delay: Some(Duration::from_millis(4)),
        asserted: "upgrades only in select_environment and save_task; a save gives up only when abandoned at shutdown",
        expected: "Toaster as shipped, varies run to run: buildinfohelper save_task busy_upgrade retried inside its block for tens of seconds while the others' commits wait 20 s (rollback), or a busy_snapshot livelock (WAL); sometimes no collision at all",
    },
    Preset {
        backend: Kind::Sqlite,
        name: "immediate",
        knobs: IMMEDIATE,
        event_delay: None,
        asserted: "busy_upgrade = busy_snapshot = 0 everywhere",
        expected: "",
    },
    Preset {
        backend: Kind::Sqlite,
        name: "robust",
        knobs: PresetKnobs {
            retry: Some(RetryPolicy::Backoff),
            claim: Some(ClaimStrategy::Guarded),
            commit: Some(CommitPolicy::Batch(500)),
            create_shape: Some(CreateShape::Bulk),
            writers: Some(1),
            checkpoint: Some(CheckpointMode::Background),
            busy_wait: Some(BusyWait::Fair(BusyWait::FAIR_DEFAULT)),
            ..IMMEDIATE
        },
        event_delay: None,
        asserted: "busy_upgrade = busy_snapshot = 0; gave_up = 0; every check count 0",
        expected: "busy_timeout only when the disk stalls, then retried",
    },
    Preset {
        backend: Kind::Postgres,
        name: "postgres",
        knobs: SERVER,
        event_delay: None,
        asserted: "gave_up = 0; every check count 0 (PostgreSQL, read committed)",
        expected: "robust's strategies on PostgreSQL: row locks instead of one file lock; lock waits show as latency, not failures",
    },
    Preset {
        backend: Kind::Postgres,
        name: "postgres-rr",
        knobs: PresetKnobs {
            isolation: Some(Isolation::RepeatableRead),
            claim: Some(ClaimStrategy::Single),
            ..SERVER
        },
        event_delay: None,
        asserted: "with --runbuilds 2: serialization failures (40001) in runbuilds' claim, all retried: gave_up = 0, nothing lost",
        expected: "repeatable read makes two schedulers' read-then-write claims collide on the request row; --retry none shows them as failures",
    },
    Preset {
        backend: Kind::Mysql,
        name: "mysql-innodb-rc",
        knobs: MYSQL_RC,
        event_delay: None,
        asserted: "gave_up = 0; every check count 0; queued_while_free 0 on a light load (MariaDB, InnoDB, read committed)",
        expected: "Django's MySQL default since 2.0: each poll sees what others committed",
    },
    Preset {
        backend: Kind::Mysql,
        name: "mysql-innodb-rr-poll",
        knobs: PresetKnobs {
            isolation: Some(Isolation::RepeatableRead),
            poll_txn: Some(true),
            ..MYSQL_RC
        },
        event_delay: None,
        asserted: "on a light load: queued_while_free > 0 and a queue wait far above mysql-innodb-rc's",
        expected: "the source document's 9-hour poller: runbuilds polls inside one transaction under repeatable read, its snapshot never moves, and requests stay queued while environments are free",
    },
    Preset {
        backend: Kind::Mysql,
        name: "mysql-myisam",
        knobs: PresetKnobs {
            mysql_engine: Some(MysqlEngine::Myisam),
            claim: Some(ClaimStrategy::Incremental),
            ..MYSQL_RC
        },
        event_delay: None,
        asserted: "with --needs-mix: check counts leaked bookings (> 0); the same load with --mysql-engine innodb leaks none",
        expected: "the incremental booking loop rolls back when it runs out; MyISAM ignores the rollback (warning 1196) and the partial bookings stay",
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

/// The lab's user and password on a local server (`scripts/test-servers`
/// makes them), for a server preset run with no URL given.
pub const LOCAL_POSTGRES_URL: &str = "postgres://locklab:locklab@127.0.0.1:5432/locklab";
pub const LOCAL_MYSQL_URL: &str = "mysql://locklab:locklab@127.0.0.1:3306/locklab";

impl Preset {
    /// The server URL a server preset runs on when no `--database-url` is
    /// given: `LAB_POSTGRES_URL` / `LAB_MYSQL_URL`, else a local server on
    /// its standard port. None for an SQLite preset.
    pub fn server_url(&self, env: Env<'_>) -> Option<String> {
        let (var, local) = match self.backend {
            Kind::Sqlite => return None,
            Kind::Postgres => ("LAB_POSTGRES_URL", LOCAL_POSTGRES_URL),
            Kind::Mysql => ("LAB_MYSQL_URL", LOCAL_MYSQL_URL),
        };
        Some(
            env(var)
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| local.to_string()),
        )
    }

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
