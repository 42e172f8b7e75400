//! `locklab run` supervises its daemons (issue 12): a daemon killed with
//! SIGKILL mid-run is logged, listed in `processes[].exits` and restarted
//! with its name and address, and the run still ends with its table, check
//! and verdict. The data survives: the check finds nothing lost, duplicated,
//! double-claimed or stuck.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{locklab, serial, text};

/// The PID of the daemon `name` (`--name NAME`) whose arguments mention `out`.
fn daemon_pid(name: &str, out: &Path) -> Option<i32> {
    let out = out.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let named = args.windows(2).any(|w| w[0] == "--name" && w[1] == name);
        if named && args.iter().any(|a| a.contains(&out)) && !args[0].ends_with("locklab") {
            return Some(pid);
        }
    }
    None
}

/// Waits until the daemon runs, then kills it with SIGKILL; returns its PID.
fn kill_when_up(name: &str, out: &Path, after: Duration) -> i32 {
    let t0 = Instant::now();
    loop {
        if let Some(pid) = daemon_pid(name, out) {
            std::thread::sleep(after);
            // SAFETY: kill(2) on a PID we just read; a test process.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            return pid;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{name} never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn process<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no process {name}"))
}

#[test]
fn killed_daemons_are_restarted_and_the_run_ends_with_its_check() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let out2 = out.clone();
    let killer = std::thread::spawn(move || {
        let a = kill_when_up("runbuilds", &out2, Duration::from_secs(4));
        let b = kill_when_up("buildinfohelper", &out2, Duration::from_secs(2));
        (a, b)
    });
    let o = locklab(
        &[
            "run",
            "--preset",
            "robust",
            "--duration",
            "14s",
            "--clients",
            "2",
            "--num",
            "5",
            "--events-per-build",
            "300",
            "--out",
            out.to_str().unwrap(),
        ],
        dir.path(),
    );
    let (killed_rb, killed_bih) = killer.join().unwrap();
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "run failed:\n{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "runbuilds (pid {killed_rb}) was killed by signal 9"
        )),
        "the death is logged with its signal: {stderr}"
    );
    assert!(
        stdout.contains("verdict:"),
        "the table and verdict: {stdout}"
    );
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    for (name, pid) in [("runbuilds", killed_rb), ("buildinfohelper", killed_bih)] {
        let exits = process(&r, name)["exits"].as_array().unwrap();
        assert_eq!(exits.len(), 1, "{name}: one death in {exits:?} (pid {pid})");
        assert_eq!(exits[0]["signal"], 9, "{name}: {exits:?}");
        assert_eq!(exits[0]["restarted"], true, "{name}: {exits:?}");
        assert!(exits[0]["at_s"].as_f64().unwrap() > 0.0, "{exits:?}");
        // The restarted instance logs to the same file, after the first.
        let log = std::fs::read_to_string(out.join("logs").join(format!("{name}.log"))).unwrap();
        assert!(
            log.matches("listening on").count() >= 2,
            "{name}'s log holds both instances"
        );
    }
    let svg = std::fs::read_to_string(out.join("timeline.svg")).unwrap();
    assert!(
        svg.matches("killed (signal 9), restarted").count() >= 2,
        "the timeline marks both deaths"
    );
    assert_eq!(
        process(&r, "webui")["exits"],
        serde_json::json!([]),
        "exits is always present"
    );
    // Recovery: the killed scheduler's claims and the killed ingester's
    // builds were taken over; nothing lost, nothing twice, nothing stuck.
    let c = &r["check"];
    for k in [
        "lost",
        "duplicated",
        "mismatched",
        "double_claimed",
        "double_booked",
        "leaked_bookings",
        "stuck",
        "beyond_expected",
    ] {
        assert_eq!(c[k], 0, "check.{k} in {c}");
    }
    assert_eq!(c["integrity_ok"], true);
    assert_eq!(
        r["identity_violations"],
        serde_json::json!([]),
        "ops = ok + gave_up + rolled_back + in flight at a death"
    );
}

#[test]
fn restart_never_leaves_a_killed_daemon_dead_and_still_reports() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let out2 = out.clone();
    let killer =
        std::thread::spawn(move || kill_when_up("runbuilds", &out2, Duration::from_secs(3)));
    let o = locklab(
        &[
            "run",
            "--preset",
            "robust",
            "--restart",
            "never",
            "--duration",
            "8s",
            "--clients",
            "1",
            "--num",
            "2",
            "--events-per-build",
            "100",
            "--drain-timeout",
            "5s",
            "--out",
            out.to_str().unwrap(),
        ],
        dir.path(),
    );
    killer.join().unwrap();
    let (stdout, stderr) = text(&o);
    assert!(
        stdout.contains("verdict:"),
        "the run still reports:\n{stdout}\n{stderr}"
    );
    assert!(stderr.contains("not restarted"), "{stderr}");
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let exits = process(&r, "runbuilds")["exits"].as_array().unwrap();
    assert_eq!(exits.len(), 1, "{exits:?}");
    assert_eq!(exits[0]["restarted"], false);
    assert_eq!(exits[0]["signal"], 9);
}

/// A SIGKILL of webui: the HTTP requests it was answering get no response,
/// which the loadgen counts as `no_response`; `check` says how many rows of
/// those requests were written (`unconfirmed`, reported, not a violation),
/// and nothing promised by a 2xx is lost.
#[test]
fn a_killed_webui_leaves_no_response_requests_that_check_accounts_for() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let out2 = out.clone();
    let killer = std::thread::spawn(move || kill_when_up("webui", &out2, Duration::from_secs(4)));
    let o = locklab(
        &[
            "run",
            "--preset",
            "robust",
            "--duration",
            "10s",
            "--clients",
            "4",
            "--num",
            "20",
            "--events-per-build",
            "100",
            "--out",
            out.to_str().unwrap(),
        ],
        dir.path(),
    );
    killer.join().unwrap();
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "run failed:\n{stdout}\n{stderr}");
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let exits = process(&r, "webui")["exits"].as_array().unwrap();
    assert_eq!(exits.len(), 1, "{exits:?}");
    assert_eq!(exits[0]["restarted"], true);
    assert!(
        r["loadgen"]["no_response"].as_u64().unwrap() > 0,
        "requests to the dead webui got no response: {}",
        r["loadgen"]
    );
    let c = &r["check"];
    assert!(c["unconfirmed"].is_u64(), "check accounts for them: {c}");
    for k in [
        "lost",
        "duplicated",
        "partial_writes",
        "misattributed",
        "stuck",
    ] {
        assert_eq!(c[k], 0, "check.{k} in {c}");
    }
}
