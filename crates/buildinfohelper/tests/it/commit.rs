//! Each commit policy, in process, on a claimed build: the stored events are
//! exactly the stream regenerated from the build's seed, the build succeeds,
//! the request completes, and rows_committed counts the events plus the
//! bookkeeping rows.

use std::time::Duration;

use buildinfohelper::Step;
use schema::models::{BuildRequest, Environment};
use schema::settings::{CommitPolicy, JournalMode, RetryPolicy};
use schema::stream::generate;
use schema::{LockState, Outcome, RequestState};

use crate::*;

const EVENTS: u32 = 60;
const SEED: i64 = 7_340_033;

/// How many commit units the policy cuts the first `n` events into.
fn units(commit: CommitPolicy, n: u32) -> u64 {
    let events = generate(SEED, n);
    let (mut units, mut in_unit, mut tasks) = (0, 0, 0);
    for (i, e) in events.iter().enumerate() {
        in_unit += 1;
        if e.kind.ends_task() {
            tasks += 1;
        }
        let full = match commit {
            CommitPolicy::PerEvent => true,
            CommitPolicy::Every3Tasks => tasks >= 3,
            CommitPolicy::Batch(b) => in_unit >= b,
        } || i + 1 == events.len();
        if full {
            units += 1;
            in_unit = 0;
            tasks = 0;
        }
    }
    units
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
        let mut conn = lab
            .conn(policy(Duration::from_secs(5), RetryPolicy::None))
            .unwrap();
        let claimed = claimed_build(&mut conn, SEED);
        let ing = ingester(commit, EVENTS, Duration::ZERO);

        let step = ing.run_once(&mut conn);
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
        // The ingester marked the environment running; releasing it is
        // runbuilds' work.
        let envs = Environment::held(conn.diesel()).unwrap();
        assert_eq!(envs.len(), 1);
        assert_eq!(envs[0].lock_state, LockState::Running);
        assert_eq!(envs[0].request_id, Some(claimed.request));

        let stats = ing.lab.stats.snapshot();
        assert!(
            stats.identity_violations().is_empty(),
            "{:?}",
            stats.identity_violations()
        );
        assert_eq!((stats.gave_up, stats.failed_total()), (0, 0), "{commit}");
        let write_op = match commit {
            CommitPolicy::PerEvent => "write_event",
            _ => "write_batch",
        };
        let writes = &stats.by_op[write_op];
        assert_eq!(writes.rows_committed, u64::from(EVENTS), "{commit}");
        let expected_units = units(commit, EVENTS);
        assert_eq!(writes.ops, expected_units, "{commit}");
        if commit == CommitPolicy::Every3Tasks {
            assert!(expected_units > 1 && expected_units < u64::from(EVENTS));
        }
        // The bookkeeping: taking the build (the build, events_expected, the
        // environment) and finishing it (the build, its counters, the request).
        assert_eq!(stats.by_op["take"].rows_committed, 3, "{commit}");
        assert_eq!(stats.by_op["finish"].rows_committed, 3, "{commit}");
        let bookkeeping: u64 = stats
            .by_op
            .iter()
            .filter(|(op, _)| op.as_str() != write_op)
            .map(|(_, o)| o.rows_committed)
            .sum();
        assert!(stats.rows_committed >= u64::from(EVENTS));
        assert_eq!(
            stats.rows_committed,
            u64::from(EVENTS) + bookkeeping,
            "{commit}"
        );

        // Nothing left to take.
        assert_eq!(ing.run_once(&mut conn), Step::Idle);
    }
}
