//! What one scheduler claims, step by step, with each strategy: all or nothing,
//! smaller requests going ahead of one that cannot be booked now, and requests
//! that can never run failed with a reason.

use std::collections::BTreeMap;
use std::time::Duration;

use runbuilds::Step;
use schema::models::{Booking, Build, BuildRequest, Needs};
use schema::settings::{ClaimStrategy, JournalMode, TxnMode};
use schema::{now_micros, Outcome, RequestState};

use crate::*;

/// The strategies that book by needs, in queue order (toaster books one
/// environment of any kind, first by id: see toaster.rs).
const STRATEGIES: [(ClaimStrategy, TxnMode); 2] = [
    (ClaimStrategy::Single, TxnMode::Immediate),
    (ClaimStrategy::Guarded, TxnMode::Immediate),
];

#[test]
fn all_or_nothing_and_smaller_requests_go_ahead() {
    let _serial = serial();
    for (strategy, mode) in STRATEGIES {
        let lab = test_lab(JournalMode::Delete);
        let mut conn = lab.conn(policy(Duration::from_secs(5), mode)).unwrap();
        let s = scheduler("runbuilds", strategy);

        // Another request holds one of the three qemux86.
        let holder = create_request(&mut conn, needs(&[("qemux86", 1)]), 0);
        let Step::Claimed(first) = s.claim(&mut conn) else {
            panic!("{strategy}: the holder is claimed");
        };
        assert_eq!(first.request, holder);

        // A higher-priority request needs all three; a later one one qemuarm.
        let big = create_request(&mut conn, needs(&[("qemux86", 3)]), 10);
        let small = create_request(&mut conn, needs(&[("qemuarm", 1)]), 0);

        let step = s.claim(&mut conn);
        assert!(
            matches!(&step, Step::Claimed(c) if c.request == small),
            "{strategy}: the smaller request goes ahead: {step:?}"
        );
        assert_eq!(booked_kinds(&mut conn, small), ["qemuarm"]);
        // The big one stays queued, with nothing booked, locked or built.
        let unbooked = |conn: &mut LabConn| {
            assert_eq!(request(conn, big).state, RequestState::Queued, "{strategy}");
            assert!(
                bookings_of(conn, big).is_empty(),
                "{strategy}: partial booking"
            );
            assert!(
                held(conn).iter().all(|e| e.request_id != Some(big)),
                "{strategy}: an environment locked for the big request"
            );
            assert!(builds_of(conn, big).is_empty(), "{strategy}");
        };
        unbooked(&mut conn);
        // Another step claims nothing and writes nothing: 2 qemux86 free, 3
        // needed.
        let step = s.claim(&mut conn);
        assert_eq!(step, Step::Waiting, "{strategy}");
        unbooked(&mut conn);

        // The holder's build completes: the next step releases its
        // environment and books all three for the big request.
        write(&mut conn, |tx| {
            Build::take(
                tx.conn(),
                first.build,
                "buildinfohelper",
                now_micros() + 10_000_000,
            )?;
            Build::finish(
                tx.conn(),
                first.build,
                "buildinfohelper",
                Outcome::Succeeded,
            )?;
            BuildRequest::transition(
                tx.conn(),
                holder,
                RequestState::InProgress,
                RequestState::Completed,
                None,
            )?;
            Ok(())
        });
        let steps = s.run_once(&mut conn, false);
        assert_eq!(
            steps[0],
            Step::Released(vec![holder]),
            "{strategy}: {steps:?}"
        );
        assert!(
            matches!(steps.last(), Some(Step::Claimed(c)) if c.request == big && c.environments.len() == 3),
            "{strategy}: {steps:?}"
        );
        assert_eq!(booked_kinds(&mut conn, big), ["qemux86"; 3]);
        assert_eq!(request(&mut conn, big).state, RequestState::InProgress);
        assert!(Booking::overlaps(conn.diesel()).unwrap().is_empty());
        assert!(Build::double_claims(conn.diesel()).unwrap().is_empty());
    }
}

#[test]
fn unsatisfiable_requests_are_failed_with_a_reason() {
    let _serial = serial();
    for (strategy, mode) in STRATEGIES {
        let lab = test_lab(JournalMode::Delete);
        let mut conn = lab.conn(policy(Duration::from_secs(5), mode)).unwrap();
        let s = scheduler("runbuilds", strategy);

        // Inserted with the model function: webui would have refused them.
        let too_many = create_request(&mut conn, needs(&[("qemux86", 4)]), 5);
        let unknown = create_request(&mut conn, needs(&[("riscv64", 1)]), 0);
        let nothing = create_request(&mut conn, Needs(BTreeMap::new()), 0);
        let fine = create_request(&mut conn, needs(&[("qemux86", 1)]), 0);

        let mut steps = Vec::new();
        for _ in 0..10 {
            let step = s.claim(&mut conn);
            let idle = step == Step::Idle;
            steps.push(step);
            if idle {
                break;
            }
        }
        assert_eq!(
            steps[..3],
            [
                Step::FailedUnsatisfiable(too_many),
                Step::FailedUnsatisfiable(unknown),
                Step::FailedUnsatisfiable(nothing),
            ],
            "{strategy}: {steps:?}"
        );
        assert!(
            matches!(&steps[3], Step::Claimed(c) if c.request == fine),
            "{strategy}: a satisfiable request still runs: {steps:?}"
        );
        assert_eq!(steps[4..], [Step::Idle], "{strategy}");

        for (id, why) in [
            (too_many, "needs 4 qemux86 but only 3 exist"),
            (unknown, "unknown environment kind \"riscv64\""),
            (nothing, "needs no environment"),
        ] {
            let r = request(&mut conn, id);
            assert_eq!(r.state, RequestState::Failed, "{strategy}");
            let reason = r.reason.unwrap_or_default();
            assert!(
                reason.starts_with("unsatisfiable: ") && reason.contains(why),
                "{strategy}: {reason:?}"
            );
            assert!(bookings_of(&mut conn, id).is_empty());
            assert!(builds_of(&mut conn, id).is_empty());
        }
    }
}
