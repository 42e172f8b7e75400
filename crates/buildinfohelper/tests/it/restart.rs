//! A real buildinfohelper killed with SIGKILL in the middle of a build, then
//! started again with the same name, resumes at max(seq) + 1 and finishes the
//! build; the stored events equal the regenerated stream exactly.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use daemon::spawn::SIGKILL;
use schema::models::{Build, BuildEvent, BuildRequest};
use schema::settings::JournalMode;
use schema::{Outcome, RequestState};
use testkit::wait_for;

use crate::*;

const EVENTS: u32 = 3000;

#[test]
fn killed_mid_build_resumes_and_finishes_it() {
    let _serial = serial();
    let lab = test_lab(JournalMode::Wal);
    let mut conn = lab.conn(policy(Duration::from_secs(5))).unwrap();
    let claimed = claimed_build(&mut conn, 8_675_309);
    // synchronous=normal: WAL survives a process crash with it, and the
    // build's 3000 single-event commits skip an fsync each.
    let flags = [
        "--events-per-build",
        "3000",
        "--event-delay",
        "1ms",
        "--lease",
        "2s",
        "--synchronous",
        "normal",
    ];

    let mut first = lab
        .start("buildinfohelper", "buildinfohelper", &flags)
        .unwrap();
    wait_for("some events stored", Duration::from_secs(30), || {
        BuildEvent::max_seq(conn.diesel(), claimed.build)
            .ok()
            .flatten()
            .filter(|m| *m >= 100)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", first.log_text()));
    first.signal(SIGKILL);
    let status = first.child.wait().unwrap();
    assert_eq!(status.signal(), Some(SIGKILL), "{status}");

    let last = BuildEvent::max_seq(conn.diesel(), claimed.build)
        .unwrap()
        .unwrap();
    let b = build(&mut conn, claimed.build);
    assert!(
        b.completed_at.is_none(),
        "killed in the middle of the build"
    );
    assert!(last < EVENTS as i32 - 1);
    assert_eq!(b.owner.as_deref(), Some("buildinfohelper"));
    assert_eq!(b.events_expected, Some(EVENTS as i32));

    let mut second = lab
        .start("buildinfohelper", "buildinfohelper", &flags)
        .unwrap();
    wait_for("the build finished", Duration::from_secs(60), || {
        Build::get(conn.diesel(), claimed.build)
            .ok()
            .flatten()
            .filter(|b| b.completed_at.is_some())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", second.log_text()));
    let resumed = format!(
        "resuming build {} at seq {} of {EVENTS}",
        claimed.build,
        last + 1
    );
    assert!(
        second
            .wait_log(Duration::from_secs(10), |l| l.contains(&resumed))
            .is_some(),
        "expected {resumed:?} in:\n{}",
        second.log_text()
    );
    let status = second.terminate(Duration::from_secs(20)).unwrap();
    assert!(status.success(), "{status}");

    // None missing, none duplicated, none different.
    assert_eq!(
        missing_seqs(&mut conn, claimed.build, EVENTS),
        Vec::<i32>::new()
    );
    let stored = BuildEvent::for_build(conn.diesel(), claimed.build).unwrap();
    assert_eq!(stored.len(), EVENTS as usize);
    let b = build(&mut conn, claimed.build);
    assert_eq!(b.outcome, Some(Outcome::Succeeded));
    assert_eq!(b.events_given_up, 0);
    assert_eq!(b.events_expected, Some(EVENTS as i32));
    let r = BuildRequest::get(conn.diesel(), claimed.request)
        .unwrap()
        .unwrap();
    assert_eq!(r.state, RequestState::Completed);
}
