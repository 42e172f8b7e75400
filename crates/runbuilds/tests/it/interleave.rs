//! Two schedulers' claims interleaved phase by phase on one real file, two
//! connections: A.read, B.read, A.write, B.write, with one queued request that
//! needs one qemux86 and three qemux86 free, so environments are never what
//! stops B.

use std::sync::mpsc;
use std::time::Duration;

use runbuilds::{Plan, Step};
use schema::db::process_lock_wait;
use schema::models::{Booking, Build, Environment};
use schema::settings::{ClaimStrategy, JournalMode, TxnMode};
use schema::{LockClass, OpError, RequestState};
use testkit::wait_for;

use crate::*;

const LONG: Duration = Duration::from_secs(30);

/// The file, the two schedulers' connections, and the queued request.
fn setup(journal: JournalMode, mode: TxnMode) -> (TestLab, LabConn, LabConn, RequestId) {
    let lab = test_lab(journal);
    let mut a = lab.conn(policy(LONG, mode)).unwrap();
    let b = lab.conn(policy(LONG, mode)).unwrap();
    let id = create_request(&mut a, needs(&[("qemux86", 1)]), 0);
    let free = Environment::free(a.diesel()).unwrap();
    assert!(free.iter().filter(|e| e.kind == "qemux86").count() >= 2);
    (lab, a, b, id)
}

fn claim_of(plan: &Plan) -> RequestId {
    match plan {
        Plan::Claim { request, .. } | Plan::Selected { request, .. } => *request,
        other => panic!("expected a claim, got {other:?}"),
    }
}

#[test]
fn toaster_claims_one_request_twice() {
    let _serial = serial();
    // Toaster's shape on Django's defaults: rollback journal, deferred.
    let (_lab, mut ca, mut cb, id) = setup(JournalMode::Delete, TxnMode::Deferred);
    let (sa, sb) = (
        scheduler("runbuilds", ClaimStrategy::Toaster),
        scheduler("runbuilds-2", ClaimStrategy::Toaster),
    );
    let (a, b) = (&sa, &sb);

    let plan_a = a.read(&mut ca).unwrap();
    let plan_b = b.read(&mut cb).unwrap();
    assert_eq!(claim_of(&plan_a), id);
    assert_eq!(plan_a, plan_b, "both read the request while it was queued");
    let step_a = a.write(&mut ca, plan_a).unwrap();
    let step_b = b.write(&mut cb, plan_b).unwrap();

    let (Step::Claimed(ca_claim), Step::Claimed(cb_claim)) = (&step_a, &step_b) else {
        panic!("both writes claim under toaster: {step_a:?} {step_b:?}");
    };
    assert_eq!((ca_claim.request, cb_claim.request), (id, id));
    // The double claim is visible: two builds of one request (no UNIQUE).
    let builds = builds_of(&mut ca, id);
    assert_eq!(builds.len(), 2, "{builds:?}");
    let doubles = Build::double_claims(ca.diesel()).unwrap();
    assert_eq!(doubles.len(), 1);
    assert_eq!(doubles[0].0, id);
    assert_eq!(request(&mut ca, id).state, RequestState::InProgress);
    // The environment read-then-lock is one SQLite transaction, serialised:
    // B locked another environment, so no environment is booked twice.
    assert_ne!(ca_claim.environments, cb_claim.environments);
    assert_eq!(bookings_of(&mut ca, id).len(), 2);
    assert!(Booking::overlaps(ca.diesel()).unwrap().is_empty());
}

#[test]
fn guarded_second_write_aborts() {
    let _serial = serial();
    let (_lab, mut ca, mut cb, id) = setup(JournalMode::Delete, TxnMode::Deferred);
    let (sa, sb) = (
        scheduler("runbuilds", ClaimStrategy::Guarded),
        scheduler("runbuilds-2", ClaimStrategy::Guarded),
    );
    let (a, b) = (&sa, &sb);

    let plan_a = a.read(&mut ca).unwrap();
    let plan_b = b.read(&mut cb).unwrap();
    assert_eq!(claim_of(&plan_a), id);
    assert_eq!(plan_a, plan_b, "both read the request while it was queued");
    let step_a = a.write(&mut ca, plan_a).unwrap();
    let lost = b.write(&mut cb, plan_b);

    assert!(
        matches!(&step_a, Step::Claimed(c) if c.request == id),
        "{step_a:?}"
    );
    match lost {
        Err(OpError::Aborted(reason)) => assert!(reason.contains("no longer queued"), "{reason}"),
        other => panic!("B's conditional update must lose the race: {other:?}"),
    }
    // A rolled-back race is no database failure.
    let stats_b = sb.lab().stats.snapshot();
    assert_eq!((stats_b.gave_up, stats_b.failed_total()), (0, 0));
    assert_eq!(stats_b.by_op["claim_write"].rolled_back, 1);
    assert_eq!(
        stats_b.by_op["claim_write"].ok, 0,
        "a rolled-back claim is not ok"
    );

    assert_eq!(builds_of(&mut ca, id).len(), 1);
    assert!(Build::double_claims(ca.diesel()).unwrap().is_empty());
    // B's rollback left nothing: one booking, one locked environment.
    assert_eq!(bookings_of(&mut ca, id).len(), 1);
    assert_eq!(held(&mut ca).len(), 1);
}

#[test]
fn single_immediate_second_read_waits_for_first_commit() {
    let _serial = serial();
    let (_lab, mut ca, cb, id) = setup(JournalMode::Delete, TxnMode::Immediate);
    let sa = scheduler("runbuilds", ClaimStrategy::Single);
    let a = &sa;

    // A.read: BEGIN IMMEDIATE and the read; the transaction stays open.
    let plan_a = a.read(&mut ca).unwrap();
    assert_eq!(claim_of(&plan_a), id);
    assert!(ca.in_transaction());

    let waited_before = process_lock_wait();
    std::thread::scope(|scope| {
        let (done_tx, done_rx) = mpsc::channel();
        let b_thread = scope.spawn(move || {
            let mut cb = cb;
            let sb = scheduler("runbuilds-2", ClaimStrategy::Single);
            let b = &sb;
            // B.read: its BEGIN IMMEDIATE waits in the busy handler for A.
            let plan_b = b.read(&mut cb).unwrap();
            done_tx.send(()).unwrap();
            let step_b = b.write(&mut cb, plan_b.clone()).unwrap();
            (plan_b, step_b)
        });
        // B is blocked: it waits for the write lock (the busy handler runs)...
        wait_for(
            "B's BEGIN IMMEDIATE to wait for the write lock",
            LONG,
            || (process_lock_wait() > waited_before).then_some(()),
        )
        .unwrap();
        // ...and has not returned while A holds it.
        assert!(
            done_rx.try_recv().is_err(),
            "B.read returned while A's transaction was open"
        );
        assert!(!b_thread.is_finished());

        // A.write commits; only then can B's read run.
        let step_a = a.write(&mut ca, plan_a).unwrap();
        assert!(
            matches!(&step_a, Step::Claimed(c) if c.request == id),
            "{step_a:?}"
        );
        assert!(!ca.in_transaction());
        let (plan_b, step_b) = b_thread.join().unwrap();
        // B read after A's commit: the request is no longer queued.
        assert_eq!(plan_b, Plan::Idle { queued: 0 });
        assert_eq!(step_b, Step::Idle);
    });

    assert_eq!(request(&mut ca, id).state, RequestState::InProgress);
    assert_eq!(builds_of(&mut ca, id).len(), 1);
    assert!(Build::double_claims(ca.diesel()).unwrap().is_empty());
    assert_eq!(bookings_of(&mut ca, id).len(), 1);
}

/// `single` with deferred transactions, on WAL (on the rollback journal this
/// one-thread interleave would deadlock: A's commit would wait for B's shared
/// lock). B's snapshot is stale when it tries to write: SQLite refuses at once
/// with busy_snapshot, and the request is still claimed once.
#[test]
fn single_deferred_on_wal_second_write_fails_busy_snapshot() {
    let _serial = serial();
    let (_lab, mut ca, mut cb, id) = setup(JournalMode::Wal, TxnMode::Deferred);
    let (sa, sb) = (
        scheduler("runbuilds", ClaimStrategy::Single),
        scheduler("runbuilds-2", ClaimStrategy::Single),
    );
    let (a, b) = (&sa, &sb);

    let plan_a = a.read(&mut ca).unwrap();
    let plan_b = b.read(&mut cb).unwrap();
    assert_eq!(plan_a, plan_b);
    let step_a = a.write(&mut ca, plan_a).unwrap();
    assert!(matches!(&step_a, Step::Claimed(c) if c.request == id));
    match b.write(&mut cb, plan_b) {
        Err(OpError::Db(e)) => assert_eq!(e.class, LockClass::BusySnapshot, "{e}"),
        other => panic!("B's stale snapshot cannot write: {other:?}"),
    }
    assert!(!cb.in_transaction(), "B rolled back");

    assert_eq!(builds_of(&mut ca, id).len(), 1);
    assert!(Build::double_claims(ca.diesel()).unwrap().is_empty());
    assert_eq!(bookings_of(&mut ca, id).len(), 1);
}
