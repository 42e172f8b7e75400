//! Each commit policy, in process, on a claimed build: the stored events are
//! exactly the stream regenerated from the build's seed, the build succeeds,
//! the request completes, and rows_committed counts the events plus the
//! bookkeeping rows.

use std::time::Duration;

use buildinfohelper::Step;
use schema::models::{Booking, BuildRequest, Environment};
use schema::settings::{CommitPolicy, JournalMode};
use schema::stream::generate;
use schema::{EventKind, Outcome, RequestState};

use crate::*;

const EVENTS: u32 = 60;
const SEED: i64 = 7_340_033;

/// The write operations a policy makes of the first `n` events, by op name:
/// one per event, one per batch, or Toaster's saves and bulk inserts.
fn write_ops(commit: CommitPolicy, n: u32) -> Vec<(&'static str, u64)> {
    let events = generate(SEED, n);
    match commit {
        CommitPolicy::PerEvent => vec![("write_event", u64::from(n))],
        CommitPolicy::Batch(b) => vec![("write_batch", u64::from(n.div_ceil(b)))],
        CommitPolicy::Every3Tasks => {
            let tasks = events.iter().filter(|e| e.kind.is_task_level()).count() as u64;
            let package_runs = events
                .windows(2)
                .filter(|w| w[0].kind == EventKind::Package && w[1].kind != EventKind::Package)
                .count() as u64
                + u64::from(events.last().is_some_and(|e| e.kind == EventKind::Package));
            let others = events
                .iter()
                .filter(|e| !e.kind.is_task_level() && e.kind != EventKind::Package)
                .count() as u64;
            vec![
                ("save_task", tasks),
                ("save_event", others),
                ("bulk_packages", package_runs),
            ]
        }
    }
}

#[test]
fn each_commit_policy_writes_exactly_the_stream() {
    let _serial = serial();
    for commit in [
        CommitPolicy::PerEvent,
        CommitPolicy::Every3Tasks,
        CommitPolicy::Batch(7),
    ] {
        let lab = test_lab(JournalMode::Wal);
        let mut conn = lab.conn(policy(Duration::from_secs(5))).unwrap();
        let claimed = claimed_build(&mut conn, SEED);
        let ing = ingester(commit, EVENTS, Duration::ZERO);

        let step = ing.run_once(&mut conn, &no_notify);
        assert_eq!(
            step,
            Step::Finished {
                build: claimed.build,
                written: EVENTS,
                given_up: 0
            },
            "{commit}"
        );
        assert_eq!(
            missing_seqs(&mut conn, claimed.build, EVENTS),
            Vec::<i32>::new(),
            "{commit}"
        );

        let b = build(&mut conn, claimed.build);
        assert_eq!(b.outcome, Some(Outcome::Succeeded), "{commit}");
        assert!(b.completed_at.is_some());
        assert_eq!(b.owner.as_deref(), Some("buildinfohelper"));
        assert_eq!(b.events_expected, Some(EVENTS as i32));
        assert_eq!((b.events_ingested, b.events_given_up), (EVENTS as i32, 0));
        let r = BuildRequest::get(conn.diesel(), claimed.request)
            .unwrap()
            .unwrap();
        assert_eq!(r.state, RequestState::Completed, "{commit}");
        // The ingester freed the environment and closed its booking.
        assert!(
            Environment::held(conn.diesel()).unwrap().is_empty(),
            "{commit}"
        );
        let bookings = Booking::all(conn.diesel()).unwrap();
        assert_eq!(bookings.len(), 1);
        assert!(bookings[0].released_at.is_some(), "{commit}");

        let stats = ing.lab.stats.snapshot();
        assert!(
            stats.identity_violations().is_empty(),
            "{:?}",
            stats.identity_violations()
        );
        assert_eq!((stats.gave_up, stats.failed_total()), (0, 0), "{commit}");
        let ops = write_ops(commit, EVENTS);
        let mut event_rows = 0;
        for (op, n) in &ops {
            let o = &stats.by_op[*op];
            assert_eq!(o.ops, *n, "{commit}: {op}");
            assert_eq!(o.ok, *n, "{commit}: {op}");
            event_rows += o.rows_committed;
        }
        assert_eq!(
            event_rows,
            u64::from(EVENTS),
            "{commit}: every event row once"
        );
        if commit == CommitPolicy::Every3Tasks {
            // a sync every third task-level event, and one at the end
            let syncs = stats.by_op.get("sync").map(|o| o.ops).unwrap_or(0);
            assert!(syncs >= 1, "{commit}: {:?}", stats.by_op.keys());
        }
        // The bookkeeping: taking the build (the build, events_expected, the
        // environment) and finishing it (the build, its counters, the request,
        // the environment freed and its booking closed).
        assert_eq!(stats.by_op["take"].rows_committed, 3, "{commit}");
        let finish_rows = stats.by_op["finish"].rows_committed
            + stats
                .by_op
                .get("finish_request")
                .map(|o| o.rows_committed)
                .unwrap_or(0);
        assert_eq!(finish_rows, 5, "{commit}");
        let bookkeeping: u64 = stats
            .by_op
            .iter()
            .filter(|(op, _)| !ops.iter().any(|(w, _)| w == op))
            .map(|(_, o)| o.rows_committed)
            .sum();
        assert_eq!(
            stats.rows_committed,
            u64::from(EVENTS) + bookkeeping,
            "{commit}"
        );

        // Nothing left to take.
        assert_eq!(ing.run_once(&mut conn, &no_notify), Step::Idle);
    }
}
