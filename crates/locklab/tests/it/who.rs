//! `locklab who`: the lock sampler names the right PID and mode when a real
//! process holds SQLite's lock: Python's sqlite3 (rollback journal: BEGIN
//! IMMEDIATE, then BEGIN EXCLUSIVE; WAL: BEGIN IMMEDIATE), a lab daemon in a
//! write transaction, a holder in another PID namespace; and, in `locklab
//! run`, a foreign holder reaches report.json, the verdict and the timeline.
//!
//! The holders wait on their stdin until told to go on, so nothing here waits
//! on a fixed sleep to make a lock appear, and nothing asserts a duration.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use locklab::who::{snapshot, LiveEvent, ProbeMode, Sampler, SamplerOptions, WriteMode};
use schema::settings::JournalMode;
use testkit::{post_json, wait_for, TestLab};

use crate::{locklab, serial, text, SMALL_LOAD};

/// A Python process with one sqlite3 connection (isolation_level=None: it
/// issues BEGIN itself) that runs each line of its stdin as SQL and answers
/// `ok` or `error ...`.
const HOLDER: &str = r#"
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
print("ready", flush=True)
for line in sys.stdin:
    sql = line.strip()
    if not sql:
        continue
    try:
        c.execute(sql).fetchall()
        print("ok", flush=True)
    except Exception as e:
        print("error", e, flush=True)
"#;

struct PyHolder {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl PyHolder {
    fn start(db: &Path) -> PyHolder {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(HOLDER)
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 is needed by these tests");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut h = PyHolder {
            child,
            stdin,
            lines,
        };
        assert_eq!(h.answer(), "ready");
        h
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn answer(&mut self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(60))
            .expect("the python holder did not answer within 60 s")
    }

    /// Runs one statement and waits for it to return: its lock is held when
    /// this returns.
    fn run(&mut self, sql: &str) {
        writeln!(self.stdin, "{sql}").unwrap();
        self.stdin.flush().unwrap();
        let a = self.answer();
        assert_eq!(a, "ok", "python3 `{sql}` answered {a}");
    }
}

impl Drop for PyHolder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh SQLite file made by Python, in the given journal mode.
fn python_db(dir: &Path, wal: bool) -> PathBuf {
    let db = dir.join("app.sqlite3");
    let mut h = PyHolder::start(&db);
    if wal {
        h.run("PRAGMA journal_mode=WAL");
    }
    h.run("CREATE TABLE t(x)");
    h.run("INSERT INTO t VALUES (1)");
    db
}

const PROBES: [ProbeMode; 2] = [ProbeMode::Getlk, ProbeMode::Proc];

/// The writers one sample sees through one probe.
fn writers_by(db: &Path, probe: ProbeMode) -> BTreeMap<i32, WriteMode> {
    snapshot(db, probe).unwrap().0.writers()
}

/// The writers one sample sees, the same through both probes (for a lock
/// that stays put while both look).
fn writers(db: &Path) -> BTreeMap<i32, WriteMode> {
    let seen: Vec<_> = PROBES
        .iter()
        .map(|p| snapshot(db, *p).unwrap().0.writers())
        .collect();
    assert_eq!(seen[0], seen[1], "F_GETLK and /proc/locks disagree");
    seen[0].clone()
}

#[test]
fn python_rollback_journal_reserved_then_exclusive() {
    let dir = tempfile::tempdir().unwrap();
    let db = python_db(dir.path(), false);
    let mut reader = PyHolder::start(&db);
    let mut py = PyHolder::start(&db);
    assert!(writers(&db).is_empty(), "nobody writes yet");

    py.run("BEGIN IMMEDIATE");
    let w = writers(&db);
    assert_eq!(w, BTreeMap::from([(py.pid(), WriteMode::Reserved)]));

    // a reader beside the RESERVED writer is a reader, not a writer (only
    // /proc/locks lists readers)
    reader.run("BEGIN");
    reader.run("SELECT * FROM t");
    let (s, _) = snapshot(&db, ProbeMode::Proc).unwrap();
    assert_eq!(
        s.writers(),
        BTreeMap::from([(py.pid(), WriteMode::Reserved)])
    );
    assert_eq!(s.readers(), vec![reader.pid()]);
    reader.run("COMMIT");

    py.run("COMMIT");
    assert!(writers(&db).is_empty(), "COMMIT released the lock");
    py.run("BEGIN EXCLUSIVE");
    assert_eq!(
        writers(&db),
        BTreeMap::from([(py.pid(), WriteMode::Exclusive)])
    );
    py.run("COMMIT");
    assert!(writers(&db).is_empty());
}

#[test]
fn python_wal_begin_immediate_holds_the_wal_write_lock() {
    let dir = tempfile::tempdir().unwrap();
    let db = python_db(dir.path(), true);
    let mut py = PyHolder::start(&db);
    py.run("BEGIN IMMEDIATE");
    assert!(
        locklab::who::target::shm_path(&db).exists(),
        "WAL mode has a -shm"
    );
    assert_eq!(
        writers(&db),
        BTreeMap::from([(py.pid(), WriteMode::WalWrite)])
    );
    py.run("COMMIT");
    assert!(writers(&db).is_empty());
}

/// Waits for a live event that `pick` accepts.
fn wait_event<T>(rx: &Receiver<LiveEvent>, mut pick: impl FnMut(&LiveEvent) -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = rx
            .recv_timeout(left)
            .expect("no such live event within 30 s");
        if let Some(v) = pick(&e) {
            return v;
        }
    }
}

#[test]
fn sampler_reports_holds_per_pid_with_live_changes() {
    for probe in PROBES {
        sampler_reports_holds(probe);
    }
}

fn sampler_reports_holds(probe: ProbeMode) {
    let dir = tempfile::tempdir().unwrap();
    let db = python_db(dir.path(), false);
    let mut py = PyHolder::start(&db);
    let (tx, rx) = mpsc::channel();
    let sampler = Sampler::start(
        &db,
        SamplerOptions {
            interval: Duration::from_millis(1),
            probe,
            live: Some(tx),
        },
    )
    .unwrap();
    for _ in 0..2 {
        py.run("BEGIN IMMEDIATE");
        let mode = wait_event(&rx, |e| match e {
            LiveEvent::Change { holders, .. } => holders
                .iter()
                .find(|h| h.pid == py.pid())
                .and_then(|h| h.mode),
            _ => None,
        });
        assert_eq!(mode, WriteMode::Reserved);
        py.run("COMMIT");
        wait_event(&rx, |e| match e {
            LiveEvent::Change { ended, .. } => ended.iter().find(|h| h.pid == py.pid()).cloned(),
            _ => None,
        });
    }
    let r = sampler.stop().unwrap();
    let h = r
        .holder(py.pid())
        .expect("the python holder is in the report");
    assert_eq!(h.count, 2);
    assert_eq!(h.name, "python3");
    assert!(h.cmdline.contains("python3"), "{}", h.cmdline);
    assert!(h.total_s > 0.0 && h.share > 0.0 && h.share <= 1.0);
    let holds: Vec<_> = r.holds.iter().filter(|x| x.pid == py.pid()).collect();
    assert_eq!(holds.len(), 2);
    for x in holds {
        assert_eq!(x.mode, WriteMode::Reserved);
        assert!(x.peak >= WriteMode::Reserved);
        assert!(x.start_us < x.end_us);
        assert!(x.start_us >= r.started_us && x.end_us <= r.ended_us);
    }
    assert!(r.samples > 0);
    assert!(r.cpu_share >= 0.0 && r.cpu_share < 1.0, "{}", r.cpu_share);
    assert_eq!(r.source, probe.as_str());
}

#[test]
fn cli_names_the_exclusive_holder_in_json_and_in_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let db = python_db(dir.path(), false);
    let mut py = PyHolder::start(&db);
    py.run("BEGIN EXCLUSIVE");
    let db_arg = db.to_string_lossy().to_string();
    let out = locklab(
        &["who", &db_arg, "--duration", "300ms", "--json"],
        dir.path(),
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let r: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let holders = r["holders"].as_array().unwrap();
    assert_eq!(holders.len(), 1, "{stdout}");
    assert_eq!(holders[0]["pid"], py.pid());
    assert_eq!(holders[0]["name"], "python3");
    assert_eq!(holders[0]["modes"]["EXCLUSIVE"], 1);
    assert!(r["samples"].as_u64().unwrap() > 0);
    for key in [
        "samples_per_s",
        "cpu_share",
        "resolution",
        "holds",
        "interval_us",
    ] {
        assert!(r.get(key).is_some(), "no {key}");
    }
    // live lines went to stderr
    assert!(
        stderr.contains(&format!("write lock: pid {} python3 EXCLUSIVE", py.pid())),
        "{stderr}"
    );

    let out = locklab(
        &["who", &db_arg, "--duration", "200ms", "--probe", "proc"],
        dir.path(),
    );
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    assert!(stdout.contains("who held the write lock on"), "{stdout}");
    assert!(stdout.contains(&py.pid().to_string()), "{stdout}");
    assert!(stdout.contains("EXCLUSIVE 1"), "{stdout}");
    assert!(stdout.contains("resolution: sampled every 1ms"), "{stdout}");
    assert!(stdout.contains("through /proc/locks + F_GETLK"), "{stdout}");
}

#[test]
fn cli_refuses_a_missing_file_and_a_file_that_is_not_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let out = locklab(
        &["who", "missing.sqlite3", "--duration", "10ms"],
        dir.path(),
    );
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("does not exist"), "{stderr}");
    std::fs::write(dir.path().join("notes.txt"), "not a database, just text\n").unwrap();
    let out = locklab(&["who", "notes.txt", "--duration", "10ms"], dir.path());
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("not an SQLite database"), "{stderr}");
    let out = locklab(&["who", ".", "--interval", "0s"], dir.path());
    assert!(!out.status.success());
    let out = locklab(&["who", "notes.txt", "--probe", "lsof"], dir.path());
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("use getlk or proc"), "{stderr}");
}

/// Run in a PID namespace of its own (`unshare`, unprivileged through a user
/// namespace), the sampler cannot see the holder: F_GETLK answers pid 0 and
/// /proc/locks leaves the lock out. It must say so and still count the hold.
#[test]
fn a_holder_in_another_pid_namespace_is_counted_as_unseen_and_explained() {
    let dir = tempfile::tempdir().unwrap();
    let db = python_db(dir.path(), false);
    let mut py = PyHolder::start(&db);
    py.run("BEGIN EXCLUSIVE");
    let bin = testkit::binary_path("locklab").unwrap();
    for probe in ["getlk", "proc"] {
        let out = Command::new("unshare")
            .args([
                "--user",
                "--map-root-user",
                "--pid",
                "--fork",
                "--mount-proc",
            ])
            .arg(&bin)
            .args(["who", "--duration", "200ms", "--json", "--probe", probe])
            .arg(&db)
            .output()
            .expect("unshare (util-linux) is needed by this test");
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "unshare or locklab failed: {stderr}");
        let r: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let holders = r["holders"].as_array().unwrap();
        assert_eq!(holders.len(), 1, "{probe}: {stdout}");
        assert_eq!(holders[0]["pid"], 0, "{probe}");
        assert_eq!(holders[0]["modes"]["EXCLUSIVE"], 1, "{probe}");
        let warnings = r["warnings"].to_string();
        assert!(warnings.contains("F_GETLK answers pid 0"), "{warnings}");
        assert!(warnings.contains("pid: host"), "{warnings}");
    }
}

/// A lab daemon in a write transaction (webui, ATOMIC_REQUESTS with 3 s of
/// app work inside it): the sampler names webui's PID, RESERVED under the
/// rollback journal and the WAL write lock under WAL.
#[test]
fn a_lab_daemon_in_a_write_transaction_is_named_with_its_mode() {
    for (journal, expected) in [
        (JournalMode::Delete, WriteMode::Reserved),
        (JournalMode::Wal, WriteMode::WalWrite),
    ] {
        let lab = TestLab::new(journal, "qemux86:1").unwrap();
        let webui = lab
            .start(
                "webui",
                "webui",
                &["--atomic-requests", "true", "--txn-work", "3s"],
            )
            .unwrap();
        let url = format!("{}/api/build-requests", webui.url);
        let post = std::thread::spawn(move || {
            post_json(&url, &serde_json::json!({"project": "p", "count": 1})).unwrap()
        });
        let pid = webui.pid();
        wait_for(
            "webui to hold the write lock",
            Duration::from_secs(30),
            || writers_by(&lab.db, ProbeMode::Getlk).get(&pid).copied(),
        )
        .unwrap();
        // it holds it for the 3 s of app work: both probes see it now
        assert_eq!(
            writers(&lab.db),
            BTreeMap::from([(pid, expected)]),
            "{journal:?}"
        );
        let answer = post.join().unwrap();
        assert_eq!(answer.status, 201, "{}", answer.body);
        assert!(writers(&lab.db).is_empty(), "the commit released it");
    }
}

/// A child that a failed assertion must not leave running.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `locklab run` with a foreign process holding BEGIN EXCLUSIVE for a moment
/// during the load: report.json's holders name it (process null), the verdict
/// names it, the timeline has its row; each daemon has its trace beside the
/// OS's figure.
#[test]
fn run_names_a_foreign_holder_in_report_verdict_and_timeline() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let bin = testkit::binary_path("locklab").unwrap();
    let mut cmd = Command::new(bin);
    for v in daemon::spawn::setting_variables() {
        cmd.env_remove(v);
    }
    let run = cmd
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .args(["run", "--preset", "django-default", "--duration", "8s"])
        .args(SMALL_LOAD)
        .arg("--out")
        .arg(&out_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut run = KillOnDrop(Some(run));
    let db = out_dir.join("locklab.sqlite3");
    // the load runs once webui has answered a request
    wait_for("the load to start", Duration::from_secs(60), || {
        std::fs::read_to_string(out_dir.join("loadgen.jsonl"))
            .ok()
            .filter(|t| !t.is_empty())
    })
    .unwrap();
    let mut py = PyHolder::start(&db);
    py.run("BEGIN EXCLUSIVE");
    // hold it until this test's own sampling has seen it, then a little
    // longer so that the run's 1 ms witness sees it too
    wait_for("the foreign hold to show", Duration::from_secs(10), || {
        (writers_by(&db, ProbeMode::Getlk).get(&py.pid()) == Some(&WriteMode::Exclusive))
            .then_some(())
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    py.run("COMMIT");
    let pid = py.pid();
    drop(py);
    let output = run.0.take().unwrap().wait_with_output().unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");

    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("report.json")).unwrap())
            .unwrap();
    let holders = r["holders"].as_array().unwrap();
    let foreign = holders
        .iter()
        .find(|h| h["pid"] == pid)
        .unwrap_or_else(|| panic!("pid {pid} is not among the holders: {holders:?}"));
    assert!(foreign["process"].is_null());
    assert_eq!(foreign["name"], "python3");
    assert!(foreign["count"].as_u64().unwrap() >= 1);
    assert!(foreign["modes"].to_string().contains("EXCLUSIVE"));
    for name in ["webui", "runbuilds", "buildinfohelper"] {
        let d = holders
            .iter()
            .find(|h| h["process"] == name)
            .unwrap_or_else(|| panic!("no holders row for {name}"));
        assert!(d["trace_total_s"].is_number(), "{name}: {d}");
        assert!(d["trace_count"].as_u64().unwrap() > 0, "{name}: {d}");
    }
    let w = &r["witness"];
    assert!(w["samples"].as_u64().unwrap() > 0);
    assert!(w["cpu_share"].is_number());
    let verdict = r["verdict"].to_string();
    assert!(
        verdict.contains(&format!("foreign holder: pid {pid} ")),
        "{verdict}"
    );
    assert!(verdict.contains("witness: write-lock time"), "{verdict}");
    let svg = std::fs::read_to_string(out_dir.join("timeline.svg")).unwrap();
    assert!(
        svg.contains(&format!("pid {pid} python3")),
        "no foreign row"
    );
    assert!(svg.contains("webui · OS"), "no OS lane for webui");
    assert!(
        stdout.contains("who held the write lock (OS-observed"),
        "{stdout}"
    );

    // `locklab timeline DIR` draws the same rows again from who.json
    let again = dir.path().join("again.svg");
    let out = locklab(
        &[
            "timeline",
            &out_dir.to_string_lossy(),
            "--out",
            &again.to_string_lossy(),
        ],
        dir.path(),
    );
    assert!(out.status.success());
    let svg = std::fs::read_to_string(&again).unwrap();
    assert!(svg.contains(&format!("pid {pid} python3")));
}

/// The pure parts: /proc/locks lines, SQLite's lock bytes, /proc/PID, the
/// file checks.
mod parse {

    mod proclocks {
        use locklab::who::proclocks::*;

        #[test]
        fn parses_a_reserved_lock() {
            let l =
                parse_line("3: POSIX  ADVISORY  WRITE 13315 fe:00:10010833 1073741825 1073741825")
                    .unwrap();
            assert_eq!(l.kind, LockKind::Posix);
            assert!(!l.blocked);
            assert_eq!(l.ltype, LockType::Write);
            assert_eq!(l.pid, 13315);
            assert_eq!((l.major, l.minor, l.inode), (0xfe, 0, 10010833));
            assert_eq!((l.start, l.end), (0x4000_0001, 0x4000_0001));
            assert!(l.overlaps(0x4000_0001, 1));
            assert!(!l.overlaps(0x4000_0000, 1));
            assert!(!l.overlaps(0x4000_0002, 510));
        }

        #[test]
        fn parses_waiters_ofd_flock_and_eof() {
            let w = parse_line("4: -> POSIX  ADVISORY  WRITE 20 08:11:99 1073741825 1073741825")
                .unwrap();
            assert!(w.blocked);
            assert_eq!((w.major, w.minor), (8, 0x11));
            let o = parse_line("7: OFDLCK ADVISORY  READ -1 00:06:3 0 EOF").unwrap();
            assert_eq!(o.kind, LockKind::Ofd);
            assert_eq!(o.pid, -1);
            assert_eq!(o.end, u64::MAX);
            let f = parse_line("1: FLOCK  ADVISORY  WRITE 1426 fe:00:753934 0 EOF").unwrap();
            assert_eq!(f.kind, LockKind::Flock);
            // a minor above 0xff prints with more digits
            let big = parse_line("2: POSIX  ADVISORY  READ 5 103:1a2:77 120 120").unwrap();
            assert_eq!((big.major, big.minor), (0x103, 0x1a2));
        }

        #[test]
        fn skips_what_is_not_a_byte_range_lock() {
            assert_eq!(parse_line(""), None);
            assert_eq!(parse_line("garbage"), None);
            assert_eq!(
                parse_line("9: LEASE  ACTIVE    READ 77 <none>:0 0 EOF"),
                None
            );
            assert_eq!(
                parse_line("3: POSIX  ADVISORY  UNLCK 1 fe:00:1 0 EOF"),
                None
            );
        }

        #[test]
        fn filters_by_inode() {
            let text = "1: POSIX  ADVISORY  WRITE 1 fe:00:10 0 0\n\
                        2: POSIX  ADVISORY  READ 2 fe:00:11 5 5\n\
                        3: FLOCK  ADVISORY  WRITE 3 fe:00:12 0 EOF\n";
            let pids: Vec<i32> = lines_for(text, &[10, 12]).map(|l| l.pid).collect();
            assert_eq!(pids, vec![1, 3]);
        }
    }

    mod decode {
        use std::collections::BTreeMap;

        use locklab::who::decode::*;
        use locklab::who::proclocks::{parse_line, LockType};

        fn states(which: Which, text: &str) -> BTreeMap<i32, PidState> {
            let mut s = BTreeMap::new();
            for l in text.lines().filter_map(parse_line) {
                add_line(&mut s, which, &l);
            }
            s
        }

        #[test]
        fn rollback_modes() {
            // BEGIN IMMEDIATE: RESERVED plus its own SHARED (as seen on this machine)
            let s = states(
                Which::Db,
                "3: POSIX  ADVISORY  WRITE 10 fe:00:1 1073741825 1073741825\n\
                 4: POSIX  ADVISORY  READ 10 fe:00:1 1073741826 1073742335\n\
                 5: POSIX  ADVISORY  READ 11 fe:00:1 1073741826 1073742335",
            );
            assert_eq!(s[&10].write, Some(WriteMode::Reserved));
            assert!(s[&10].reader);
            assert_eq!(s[&11].write, None);
            assert!(s[&11].reader);
            // BEGIN EXCLUSIVE: one merged WRITE range from PENDING to SHARED's end
            let s = states(
                Which::Db,
                "3: POSIX  ADVISORY  WRITE 10 fe:00:1 1073741824 1073742335",
            );
            assert_eq!(s[&10].write, Some(WriteMode::Exclusive));
            // a committer waiting for readers: PENDING and RESERVED merged
            let s = states(
                Which::Db,
                "3: POSIX  ADVISORY  WRITE 10 fe:00:1 1073741824 1073741825\n\
                 4: POSIX  ADVISORY  READ 10 fe:00:1 1073741826 1073742335",
            );
            assert_eq!(s[&10].write, Some(WriteMode::Pending));
            // a reader taking SHARED holds PENDING as READ for an instant
            let s = states(
                Which::Db,
                "3: POSIX  ADVISORY  READ 12 fe:00:1 1073741824 1073741824",
            );
            assert_eq!(s[&12].write, None);
            assert!(s[&12].reader);
        }

        #[test]
        fn wal_modes() {
            let s = states(
                Which::Shm,
                "3: POSIX  ADVISORY  WRITE 20 fe:00:2 120 120\n\
                 4: POSIX  ADVISORY  READ 20 fe:00:2 123 123\n\
                 5: POSIX  ADVISORY  READ 20 fe:00:2 128 128\n\
                 6: POSIX  ADVISORY  WRITE 21 fe:00:2 121 121\n\
                 7: POSIX  ADVISORY  READ 22 fe:00:2 128 128",
            );
            assert_eq!(s[&20].write, Some(WriteMode::WalWrite));
            assert!(s[&20].reader);
            assert_eq!(s[&21].write, None);
            assert!(s[&21].checkpointer);
            // the dead man switch alone is not reading
            assert!(!s[&22].reader);
        }

        #[test]
        fn blocked_waiters_wait_and_hold_nothing() {
            let s = states(
                Which::Db,
                "3: POSIX  ADVISORY  WRITE 10 fe:00:1 1073741824 1073742335\n\
                 3: -> POSIX  ADVISORY  READ 30 fe:00:1 1073741824 1073741824",
            );
            assert!(s[&30].waiting);
            assert_eq!(s[&30].write, None);
        }

        #[test]
        fn getlk_answers() {
            assert_eq!(
                getlk_write_mode(Which::Db, LockType::Write, RESERVED_BYTE, 1),
                Some(WriteMode::Reserved)
            );
            assert_eq!(
                getlk_write_mode(Which::Db, LockType::Write, PENDING_BYTE, 512),
                Some(WriteMode::Exclusive)
            );
            assert_eq!(
                getlk_write_mode(Which::Db, LockType::Read, SHARED_FIRST, SHARED_SIZE),
                None
            );
            assert_eq!(
                getlk_write_mode(Which::Shm, LockType::Write, 120, 1),
                Some(WriteMode::WalWrite)
            );
            assert_eq!(getlk_write_mode(Which::Shm, LockType::Write, 121, 1), None);
        }
    }

    mod procinfo {
        use locklab::who::procinfo::*;

        const ID: &str = "3f2a9c1b0d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8";

        #[test]
        fn containers_from_cgroups() {
            assert_eq!(
                container_of(&format!("0::/system.slice/docker-{ID}.scope\n")),
                Some("docker:3f2a9c1b0d4e".to_string())
            );
            assert_eq!(
                container_of(&format!("12:pids:/docker/{ID}\n0::/docker/{ID}\n")),
                Some("docker:3f2a9c1b0d4e".to_string())
            );
            assert_eq!(
                container_of(&format!(
                    "0::/kubepods.slice/kubepods-burstable.slice/cri-containerd-{ID}.scope"
                )),
                Some("containerd:3f2a9c1b0d4e".to_string())
            );
            assert_eq!(
                container_of(&format!("0::/machine.slice/libpod-{ID}.scope/container")),
                Some("podman:3f2a9c1b0d4e".to_string())
            );
            assert_eq!(
                container_of("0::/user.slice/user-1000.slice/session-3.scope"),
                None
            );
            assert_eq!(container_of("0::/"), None);
        }

        #[test]
        fn command_lines() {
            assert_eq!(
                cmdline_text(b"python3\0manage.py\0runserver\0"),
                "python3 manage.py runserver"
            );
            assert_eq!(
                cmdline_text(b"python3\0-c\0\nimport sqlite3\n\tc = 1\n\0db.sqlite3\0"),
                "python3 -c import sqlite3 c = 1 db.sqlite3"
            );
            assert_eq!(
                short_command("python3", "/usr/bin/python3 manage.py runserver", 40),
                "python3 manage.py runserver"
            );
            assert_eq!(
                short_command("kworker/0:1", "[kworker/0:1]", 40),
                "kworker/0:1"
            );
            let long = "x".repeat(CMDLINE_MAX + 10);
            let short = cmdline_text(long.as_bytes());
            assert_eq!(short.chars().count(), CMDLINE_MAX);
            assert!(short.ends_with('…'));
        }

        #[test]
        fn this_process_and_a_vanished_one() {
            let me = proc_info(std::process::id() as i32);
            assert!(!me.name.is_empty());
            assert!(!me.cmdline.is_empty());
            assert_eq!(proc_info(0).name, UNSEEN_NAME);
            // pid_max is at most 2^22: this PID cannot exist
            assert_eq!(proc_info(i32::MAX).name, "(exited)");
        }
    }

    mod target {
        use locklab::who::proclocks::LockType;
        use locklab::who::target::*;

        #[test]
        fn refuses_missing_non_sqlite_and_directories() {
            let dir = tempfile::tempdir().unwrap();
            let missing = dir.path().join("nope.sqlite3");
            let e = check_database(&missing).unwrap_err().to_string();
            assert!(e.contains("does not exist"), "{e}");
            let text = dir.path().join("notes.txt");
            std::fs::write(&text, "hello, this is not a database at all").unwrap();
            let e = check_database(&text).unwrap_err().to_string();
            assert!(e.contains("not an SQLite database"), "{e}");
            let e = check_database(dir.path()).unwrap_err().to_string();
            assert!(e.contains("not a regular file"), "{e}");
            let empty = dir.path().join("empty.sqlite3");
            std::fs::write(&empty, "").unwrap();
            assert!(check_database(&empty).unwrap().is_some());
            let good = dir.path().join("good.sqlite3");
            let mut bytes = SQLITE_HEADER.to_vec();
            bytes.extend([0u8; 84]);
            std::fs::write(&good, bytes).unwrap();
            assert_eq!(check_database(&good).unwrap(), None);
        }

        #[test]
        fn getlk_on_an_unlocked_file_finds_nothing() {
            let dir = tempfile::tempdir().unwrap();
            let f = dir.path().join("x");
            std::fs::write(&f, b"x").unwrap();
            let p = Probe::open(&f).unwrap();
            assert_eq!(p.getlk(LockType::Write, 0, 0).unwrap(), None);
            assert_eq!(p.getlk(LockType::Read, 0x4000_0000, 512).unwrap(), None);
        }
    }
}
