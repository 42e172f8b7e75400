//! A write that finally fails is skipped and counted as given up: the event is
//! lost, as Toaster silently loses it, and the build still finishes. The
//! holes are exactly the given-up events.

use std::time::Duration;

use buildinfohelper::Step;
use schema::models::{BuildEvent, BuildRequest, Project};
use schema::settings::{CommitPolicy, JournalMode, TxnMode};
use schema::{Outcome, RequestState};
use testkit::wait_for;

use crate::*;

const EVENTS: u32 = 300;

#[test]
fn given_up_writes_become_holes() {
    let _serial = serial();
    let lab = test_lab(JournalMode::Wal);
    let mut conn = lab.conn(policy(Duration::from_secs(5))).unwrap();
    let claimed = claimed_build(&mut conn, 31_337);
    // The ingester: retry none, a 100 ms busy timeout, one event per commit.
    let mut ingester_conn = lab.conn(policy(Duration::from_millis(100))).unwrap();
    let ing = ingester(CommitPolicy::PerEvent, EVENTS, Duration::from_millis(5));
    // Another writer, whose BEGIN IMMEDIATE takes the write lock.
    let mut holder = lab
        .conn(Policy {
            busy_timeout: Duration::from_secs(10),
            txn_mode: TxnMode::Immediate,
            ..Policy::default()
        })
        .unwrap();

    let step = std::thread::scope(|scope| {
        let worker = scope.spawn(|| ing.run_once(&mut ingester_conn, &no_notify));
        wait_for("the first stored events", Duration::from_secs(30), || {
            BuildEvent::max_seq(conn.diesel(), claimed.build)
                .ok()
                .flatten()
        })
        .unwrap();
        holder.begin().unwrap();
        Project::create(holder.diesel(), "lock-holder").unwrap();
        assert!(!worker.is_finished(), "the build is still being written");
        // The holder commits half a second later, from a helper thread.
        scope
            .spawn(move || {
                std::thread::sleep(Duration::from_millis(500));
                holder.commit().unwrap();
            })
            .join()
            .unwrap();
        worker.join().unwrap()
    });

    let Step::Finished {
        build: id,
        written,
        given_up,
    } = step
    else {
        panic!("the build still finishes: {step:?}");
    };
    assert_eq!(id, claimed.build);
    assert!(given_up > 0, "some events were given up");
    assert_eq!(written + given_up, EVENTS);

    // Each given-up write failed once, as busy_timeout, and was not retried.
    let stats = ing.lab.stats.snapshot();
    let writes = &stats.by_op["write_event"];
    assert_eq!(writes.gave_up, u64::from(given_up));
    assert_eq!(writes.retried, 0);
    assert_eq!(
        writes.failed.keys().collect::<Vec<_>>(),
        ["busy_timeout"],
        "{:?}",
        writes.failed
    );
    assert_eq!(writes.rows_committed, u64::from(written));
    assert!(
        stats.identity_violations().is_empty(),
        "{:?}",
        stats.identity_violations()
    );

    // The build finished anyway, and says how many it lost.
    let b = build(&mut conn, id);
    assert_eq!(b.outcome, Some(Outcome::Succeeded));
    assert_eq!(b.events_given_up, given_up as i32);
    assert_eq!(b.events_ingested, written as i32);
    let r = BuildRequest::get(conn.diesel(), claimed.request)
        .unwrap()
        .unwrap();
    assert_eq!(r.state, RequestState::Completed);

    // The holes are exactly the given-up events: as many, one run of seqs
    // while the lock was held, and no stored event duplicated or different.
    let missing = missing_seqs(&mut conn, id, EVENTS);
    assert_eq!(missing.len(), given_up as usize, "{missing:?}");
    assert!(
        missing[0] > 0,
        "the first events were stored before the lock was taken"
    );
    assert!(
        missing.windows(2).all(|w| w[1] == w[0] + 1),
        "one contiguous hole: {missing:?}"
    );
}
