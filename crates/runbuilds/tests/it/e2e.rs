//! The real runbuilds binary (and, for the full flow, the real buildinfohelper)
//! on a temp file: two schedulers at once, wake-ups, lease expiry.

use std::time::Duration;

use daemon::spawn::{Child, SIGUSR1};
use schema::models::{Booking, Build, BuildRequest, Environment, Needs};
use schema::settings::{JournalMode, TxnMode};
use schema::stats::ProcessReport;
use schema::{Outcome, RequestState};
use testkit::{get, post_json, wait_for};

use crate::*;

const WITHIN: Duration = Duration::from_secs(30);

fn stats(child: &Child) -> serde_json::Value {
    get(&format!("{}/api/stats", child.url)).unwrap().json()
}

/// Passes the scheduler has finished: its toaster claim's `select_request`
/// operations (the default preset claims as Toaster does).
fn claims_done(child: &Child) -> u64 {
    stats(child)["by_op"]["select_request"]["ops"]
        .as_u64()
        .unwrap_or(0)
}

fn state_of(conn: &mut LabConn, id: RequestId) -> Option<RequestState> {
    BuildRequest::get(conn.diesel(), id).ok()?.map(|r| r.state)
}

fn logs(children: &[&Child]) -> String {
    children
        .iter()
        .map(|c| format!("--- {} ---\n{}", c.name, c.log_text()))
        .collect()
}

/// Two real runbuilds processes with `guarded` and one real buildinfohelper
/// over 240 requests created up front: every request completes, none has two
/// builds, the booking intervals of no environment overlap, and every
/// environment ends free.
#[test]
fn two_guarded_schedulers_never_claim_or_book_twice() {
    let _serial = serial();
    let lab = test_lab(JournalMode::Wal);
    let mut conn = lab
        .conn(policy(Duration::from_secs(5), TxnMode::Deferred))
        .unwrap();
    const N: usize = 240;
    let all: Vec<(Needs, i32)> = (0..N)
        .map(|i| {
            let n = match i % 6 {
                0 => needs(&[("qemux86", 2)]),
                1 | 4 => needs(&[("qemuarm", 1)]),
                5 => needs(&[("qemux86", 1), ("qemuarm", 1)]),
                _ => needs(&[("qemux86", 1)]),
            };
            (n, i32::from(i % 5 == 0))
        })
        .collect();
    let ids = create_requests(&mut conn, &all);
    assert_eq!(ids.len(), N);

    let scheduler_flags = [
        "--claim",
        "guarded",
        "--txn-mode",
        "immediate",
        "--poll-interval",
        "100ms",
    ];
    let mut r1 = lab
        .start("runbuilds", "runbuilds", &scheduler_flags)
        .unwrap();
    let mut r2 = lab
        .start("runbuilds", "runbuilds-2", &scheduler_flags)
        .unwrap();
    let mut ingester = lab
        .start(
            "buildinfohelper",
            "buildinfohelper",
            &["--events-per-build", "5", "--commit", "batch:50"],
        )
        .unwrap();

    let done = wait_for("every request completed", Duration::from_secs(50), || {
        let by_state = BuildRequest::count_by_state(conn.diesel()).ok()?;
        (by_state.get("completed").copied() == Some(N as i64)).then_some(())
    });
    if let Err(e) = done {
        panic!(
            "{e}: {:?}\n{}",
            BuildRequest::count_by_state(conn.diesel()),
            logs(&[&r1, &r2, &ingester])
        );
    }
    wait_for("every environment free", WITHIN, || {
        Environment::held(conn.diesel())
            .ok()
            .filter(|h| h.is_empty())
    })
    .unwrap();
    for child in [&mut r1, &mut r2, &mut ingester] {
        let status = child.terminate(WITHIN).unwrap();
        assert!(status.success(), "{} exited {status}", child.name);
    }

    // No request claimed twice: one build each, all succeeded.
    assert!(Build::double_claims(conn.diesel()).unwrap().is_empty());
    let builds = Build::all(conn.diesel()).unwrap();
    assert_eq!(builds.len(), N);
    assert!(builds.iter().all(|b| b.outcome == Some(Outcome::Succeeded)));
    // No environment booked twice: the intervals prove it.
    assert!(Booking::overlaps(conn.diesel()).unwrap().is_empty());
    let bookings = Booking::all(conn.diesel()).unwrap();
    let wanted: usize = all.iter().map(|(n, _)| n.total() as usize).sum();
    assert_eq!(bookings.len(), wanted);
    for b in &bookings {
        let released = b.released_at.expect("every booking released");
        assert!(released >= b.booked_at, "{b:?}");
    }
    // All or nothing: each request booked exactly the kinds it needs.
    for (id, (n, _)) in ids.iter().zip(&all) {
        assert_eq!(
            booked_kinds(&mut conn, *id),
            wanted_kinds(n),
            "request {id}"
        );
    }
    assert!(held(&mut conn).is_empty());
    assert_eq!(Environment::all(conn.diesel()).unwrap().len(), 5);

    // The counting identities hold in each process's final stats.
    for name in ["runbuilds", "runbuilds-2", "buildinfohelper"] {
        let text = std::fs::read_to_string(lab.path().join(format!("stats-{name}.json"))).unwrap();
        let report: ProcessReport = serde_json::from_str(&text).unwrap();
        assert!(
            report.identity_violations().is_empty(),
            "{:?}",
            report.identity_violations()
        );
    }
    let by_first = builds
        .iter()
        .filter(|b| b.claimed_by.as_deref() == Some("runbuilds"))
        .count();
    eprintln!(
        "claims: runbuilds {by_first}, runbuilds-2 {}",
        builds.len() - by_first
    );
}

/// With an hour's poll interval, a queued request is claimed after SIGUSR1,
/// and again after POST /wake.
#[test]
fn wakes_on_sigusr1_and_post_wake() {
    let _serial = serial();
    let lab = test_lab(JournalMode::Wal);
    let mut conn = lab
        .conn(policy(Duration::from_secs(5), TxnMode::Deferred))
        .unwrap();
    let rb = lab
        .start("runbuilds", "runbuilds", &["--poll-interval", "1h"])
        .unwrap();
    // Its first step found nothing queued; now it sleeps for an hour.
    let mut done = wait_for("the first step", WITHIN, || {
        Some(claims_done(&rb)).filter(|n| *n >= 1)
    })
    .unwrap();

    for how in ["SIGUSR1", "POST /wake"] {
        let id = create_request(&mut conn, needs(&[("qemux86", 1)]), 0);
        assert_eq!(state_of(&mut conn, id), Some(RequestState::Queued));
        if how == "SIGUSR1" {
            rb.signal(SIGUSR1);
        } else {
            let answer = post_json(&format!("{}/wake", rb.url), &serde_json::json!({})).unwrap();
            assert_eq!(answer.status, 200, "{answer:?}");
            assert_eq!(answer.json()["woken"], true);
        }
        wait_for(&format!("the claim after {how}"), WITHIN, || {
            (state_of(&mut conn, id) == Some(RequestState::InProgress)).then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", rb.log_text()));
        assert_eq!(builds_of(&mut conn, id).len(), 1);
        // The step after the claim found nothing and the loop went back to
        // sleep: the next request waits for the next wake-up.
        let before = done;
        done = wait_for("the idle step after the claim", WITHIN, || {
            Some(claims_done(&rb)).filter(|n| *n >= before + 2)
        })
        .unwrap();
    }
}

/// A claimed build that no ingester takes is left alone: it has no holder
/// that could have crashed. Once an ingester takes it (lease 300ms) and stops
/// renewing, it is failed a whole lease after its lease ran out, and its
/// environments are freed with its bookings closed.
#[test]
fn expired_lease_fails_the_build_and_frees_its_environments() {
    let _serial = serial();
    let lab = test_lab(JournalMode::Wal);
    let mut conn = lab
        .conn(policy(Duration::from_secs(5), TxnMode::Deferred))
        .unwrap();
    let id = create_request(&mut conn, needs(&[("qemux86", 2)]), 0);
    let rb = lab
        .start(
            "runbuilds",
            "runbuilds",
            &[
                "--lease",
                "300ms",
                "--poll-interval",
                "100ms",
                "--claim",
                "guarded",
            ],
        )
        .unwrap();
    wait_for("the claim", WITHIN, || {
        (state_of(&mut conn, id) == Some(RequestState::InProgress)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", rb.log_text()));
    // Several leases pass: nobody took the build, so it is not expired.
    wait_for("more passes", WITHIN, || {
        let s = stats(&rb);
        (s["by_op"]["find_expired"]["ok"].as_u64().unwrap_or(0) > 20).then_some(())
    })
    .unwrap();
    assert_eq!(state_of(&mut conn, id), Some(RequestState::InProgress));
    assert_eq!(Environment::held(conn.diesel()).unwrap().len(), 2);
    // An ingester takes it and dies at once.
    let build = builds_of(&mut conn, id)[0].id;
    write(&mut conn, |tx| {
        Ok(Build::take(
            tx.conn(),
            build,
            "ghost",
            schema::now_micros() + 300_000,
        )?)
    });

    let freed = wait_for(
        "the build failed and its environments freed",
        WITHIN,
        || {
            let failed = state_of(&mut conn, id) == Some(RequestState::Failed);
            let held = Environment::held(conn.diesel()).ok()?;
            let bookings = Booking::all(conn.diesel()).ok()?;
            let released = bookings.len() == 2 && bookings.iter().all(|b| b.released_at.is_some());
            (failed && held.is_empty() && released).then_some(bookings)
        },
    );
    let bookings = freed.unwrap_or_else(|e| panic!("{e}\n{}", rb.log_text()));

    let builds = builds_of(&mut conn, id);
    assert_eq!(builds.len(), 1);
    let b = &builds[0];
    assert_eq!(b.claimed_by.as_deref(), Some("runbuilds"));
    assert_eq!(b.owner.as_deref(), Some("ghost"));
    assert_eq!(b.outcome, Some(Outcome::Failed));
    let lease_until = b.lease_until.unwrap();
    let completed = b.completed_at.unwrap();
    let lease_us = 300_000;
    assert!(
        completed >= lease_until + lease_us,
        "failed {}µs after the lease ran out, before a whole lease",
        completed - lease_until
    );
    // Release comes with the expiry.
    for booking in &bookings {
        assert!(booking.released_at.unwrap() >= completed, "{booking:?}");
    }
    assert_eq!(booked_kinds(&mut conn, id), ["qemux86"; 2]);
    assert!(
        rb.wait_log(Duration::from_secs(10), |l| l
            .contains("lease expired for requests"))
            .is_some(),
        "{}",
        rb.log_text()
    );
}

/// The daemon, not only the library, fails a request no environments could
/// ever satisfy, and says why.
#[test]
fn daemon_fails_unsatisfiable_request() {
    let _serial = serial();
    let lab = test_lab(JournalMode::Wal);
    let mut conn = lab
        .conn(policy(Duration::from_secs(5), TxnMode::Deferred))
        .unwrap();
    let id = create_request(&mut conn, needs(&[("qemuarm", 3)]), 0);
    let rb = lab
        .start(
            "runbuilds",
            "runbuilds",
            &["--poll-interval", "100ms", "--claim", "guarded"],
        )
        .unwrap();
    wait_for("the request failed", WITHIN, || {
        (state_of(&mut conn, id) == Some(RequestState::Failed)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", rb.log_text()));
    let reason = request(&mut conn, id).reason.unwrap_or_default();
    assert!(
        reason.contains("needs 3 qemuarm but only 2 exist"),
        "{reason}"
    );
    assert!(builds_of(&mut conn, id).is_empty());
    assert!(
        rb.wait_log(Duration::from_secs(10), |l| l.contains("can never run"))
            .is_some(),
        "{}",
        rb.log_text()
    );
}

fn passes(child: &Child) -> u64 {
    stats(child)["by_op"]["select_request"]["ops"]
        .as_u64()
        .unwrap_or(0)
}

/// LAB_WAKE=notify: runbuilds schedules only when woken. webui wakes it after
/// a create, with SIGUSR1 through runbuilds' pidfile (same PID namespace), or
/// with POST /wake when it cannot signal; one wake runs the pass
/// LAB_WAKE_PASSES times (7: Toaster's quirk).
#[test]
fn notify_schedules_only_when_woken() {
    let _serial = serial();
    let lab = test_lab(JournalMode::Wal);
    let mut conn = lab
        .conn(policy(Duration::from_secs(5), TxnMode::Deferred))
        .unwrap();
    let rb = lab
        .start("runbuilds", "runbuilds", &["--wake", "notify"])
        .unwrap();
    let pidfile = lab.path().join(".runbuilds.pid");
    wait_for("runbuilds' pidfile", WITHIN, || {
        pidfile.exists().then_some(())
    })
    .unwrap();
    let text = std::fs::read_to_string(&pidfile).unwrap();
    assert_eq!(text.lines().next(), Some(rb.pid().to_string().as_str()));
    assert!(
        text.lines()
            .nth(1)
            .is_some_and(|ns| ns.starts_with("pid:[")),
        "{text}"
    );

    // A request nobody announces stays queued: no pass runs.
    let id = create_request(&mut conn, needs(&[("qemux86", 1)]), 0);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(state_of(&mut conn, id), Some(RequestState::Queued));
    assert_eq!(passes(&rb), 0, "{}", rb.log_text());

    // webui's create wakes it with SIGUSR1 (same PID namespace).
    let web = lab.start("webui", "webui", &["--wake", "notify"]).unwrap();
    let created = post_json(
        &format!("{}/api/build-requests", web.url),
        &serde_json::json!({"project": "p", "count": 1}),
    )
    .unwrap();
    assert_eq!(created.status, 201, "{created:?}");
    wait_for("the claims after the wake", WITHIN, || {
        (state_of(&mut conn, id) == Some(RequestState::InProgress)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&[&rb, &web])));
    wait_for("the passes of one wake", WITHIN, || {
        (passes(&rb) >= u64::from(schema::settings::TOASTER_WAKE_PASSES)).then_some(())
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        passes(&rb),
        u64::from(schema::settings::TOASTER_WAKE_PASSES),
        "one wake, one round of passes"
    );
    drop(web);

    // A webui that cannot signal (its pidfile names nothing) POSTs /wake.
    let web = lab
        .start(
            "webui",
            "webui",
            &[
                "--wake",
                "notify",
                "--pidfile",
                lab.path().join("none.pid").to_str().unwrap(),
                "--wake-url",
                &rb.url,
            ],
        )
        .unwrap();
    let before = passes(&rb);
    let created = post_json(
        &format!("{}/api/build-requests", web.url),
        &serde_json::json!({"project": "p", "count": 1}),
    )
    .unwrap();
    assert_eq!(created.status, 201);
    let new_id = RequestId(created.json()["ids"][0].as_i64().unwrap());
    wait_for("the claim after POST /wake", WITHIN, || {
        (state_of(&mut conn, new_id) == Some(RequestState::InProgress)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&[&rb, &web])));
    assert!(passes(&rb) > before);
}
