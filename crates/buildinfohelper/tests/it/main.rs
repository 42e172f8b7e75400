//! Integration tests of buildinfohelper: the commit policies in process, given-up
//! writes left as holes, a real ingester killed and restarted mid-build, and
//! the command line. Every test gets its own migrated SQLite file in a temp
//! dir; contention tests and real processes run one at a time.
#![allow(clippy::unwrap_used)]

mod cli;
mod commit;
mod gave_up;
mod restart;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use buildinfohelper::Ingester;
use schema::db::{LabConn, Policy, Tx};
use schema::models::{Build, BuildEvent, BuildRequest, Needs, NewRequest, Project};
use schema::settings::{CommitPolicy, JournalMode, TxnMode};
use schema::strategy::claim::{self, ClaimCtx, Claimed, Step as ClaimStep};
use schema::stream::generate;
use schema::{BuildId, Lab, TxError};
use testkit::TestLab;

/// Contention tests and real daemons run one at a time: two of them at once on
/// two cores distort each other.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A fresh migrated file with 3 qemux86 and 2 qemuarm.
pub fn test_lab(journal: JournalMode) -> TestLab {
    TestLab::new(journal, "qemux86:3,qemuarm:2").unwrap()
}

pub fn policy(timeout: Duration) -> Policy {
    Policy {
        busy_timeout: timeout,
        txn_mode: TxnMode::Deferred,
        ..Policy::default()
    }
}

/// Runs `body` in one write transaction of the test's own connection.
pub fn write<T>(conn: &mut LabConn, mut body: impl FnMut(&mut Tx<'_>) -> Result<T, TxError>) -> T {
    conn.write_txn("test", &mut body)
        .map(|(v, _, _)| v)
        .unwrap()
}

/// Queues one request for one qemux86 and claims it with runbuilds' guarded
/// claim: an inprogress request with a build no ingester owns yet. Its seed is
/// then set to `seed`, so that a test knows the stream.
pub fn claimed_build(conn: &mut LabConn, seed: i64) -> Claimed {
    write(conn, |tx| {
        let project = Project::get_or_create(tx.conn(), "tests")?;
        BuildRequest::create(
            tx.conn(),
            &NewRequest {
                project_id: project,
                needs: &Needs::default(),
                priority: 0,
                submitted_by: "tests",
                client_request_id: None,
                build_id: None,
            },
        )?;
        Ok(())
    });
    let ctx = ClaimCtx {
        lab: Lab::new("runbuilds"),
        lease: Duration::from_secs(10),
    };
    let step = claim::strategy(schema::settings::ClaimStrategy::Guarded).claim(&ctx, conn);
    let ClaimStep::Claimed(claimed) = step else {
        panic!("nothing to claim: {step:?}");
    };
    write(conn, |tx| {
        Ok(testkit::plant::set_seed(tx.conn(), claimed.build, seed)?)
    });
    claimed
}

/// No runbuilds to wake in these tests.
pub fn no_notify() {}

pub fn ingester(commit: CommitPolicy, events: u32, delay: Duration) -> Ingester {
    Ingester {
        lab: Lab::new("buildinfohelper"),
        commit,
        events_per_build: events,
        event_delay: delay,
        lease: Duration::from_secs(10),
    }
}

pub fn build(conn: &mut LabConn, id: BuildId) -> Build {
    Build::get(conn.diesel(), id).unwrap().unwrap()
}

/// Compares a build's stored events with the stream regenerated from its seed
/// (kind, name and payload per seq). Returns the seqs of `0..n` that are
/// missing; panics on a duplicated, extra or different event.
pub fn missing_seqs(conn: &mut LabConn, id: BuildId, n: u32) -> Vec<i32> {
    let seed = build(conn, id).seed.unwrap();
    let stored = BuildEvent::for_build(conn.diesel(), id).unwrap();
    let emitted = generate(seed, n);
    for pair in stored.windows(2) {
        assert!(
            pair[0].seq < pair[1].seq,
            "seq {} stored twice",
            pair[1].seq
        );
    }
    for e in &stored {
        let want = usize::try_from(e.seq)
            .ok()
            .and_then(|i| emitted.get(i))
            .unwrap_or_else(|| panic!("seq {} was never emitted", e.seq));
        assert_eq!(
            (e.kind, e.name.as_str(), e.payload.as_str()),
            (want.kind, want.name.as_str(), want.payload.as_str()),
            "event {} differs from its regenerated stream",
            e.seq
        );
    }
    let present: std::collections::BTreeSet<i32> = stored.iter().map(|e| e.seq).collect();
    emitted
        .iter()
        .map(|e| e.seq)
        .filter(|s| !present.contains(s))
        .collect()
}
