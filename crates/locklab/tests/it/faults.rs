//! Faults the lab must survive (issue 12), each with the real binaries: a
//! foreign process holding the write lock past the busy timeout, a database
//! the daemon may not write, a full disk, and a corrupt page. Each asserts
//! what the user sees (the status, the one log line), what the daemon
//! counted, and the data afterwards.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use diesel::{Connection, RunQueryDsl, SqliteConnection};
use schema::settings::JournalMode;
use serde_json::{json, Value};
use testkit::{get, post_json, wait_for, TestLab};

use crate::serial;

fn create(url: &str, project: &str, count: u32) -> testkit::Answer {
    post_json(
        &format!("{url}/api/build-requests"),
        &json!({ "project": project, "count": count }),
    )
    .unwrap()
}

fn stats(url: &str) -> Value {
    get(&format!("{url}/api/stats")).unwrap().json()
}

fn failed(stats: &Value, class: &str) -> u64 {
    stats["failed"][class].as_u64().unwrap_or(0)
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

#[derive(diesel::QueryableByName)]
struct Text {
    #[diesel(sql_type = diesel::sql_types::Text)]
    t: String,
}

fn sqlite(db: &Path) -> SqliteConnection {
    SqliteConnection::establish(db.to_str().unwrap()).unwrap()
}

/// Build requests of `project` in the file.
fn requests_of(db: &Path, project: &str) -> i64 {
    diesel::sql_query(
        "SELECT COUNT(*) AS n FROM build_request r JOIN project p ON p.id = r.project_id \
         WHERE p.name = ?",
    )
    .bind::<diesel::sql_types::Text, _>(project)
    .get_result::<Count>(&mut sqlite(db))
    .unwrap()
    .n
}

fn integrity(db: &Path) -> String {
    diesel::sql_query("SELECT integrity_check AS t FROM pragma_integrity_check()")
        .get_result::<Text>(&mut sqlite(db))
        .unwrap()
        .t
}

/// `locklab hold` on `db` for `hold_for`, returned once it holds the lock
/// (its "holding" line).
fn hold(db: &Path, hold_for: &str) -> Child {
    let mut child = Command::new(testkit::binary_path("locklab").unwrap())
        .args(["hold", "--database-url"])
        .arg(db)
        .args(["--for", hold_for])
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        let line = lines
            .next()
            .expect("locklab hold ended before it held the lock")
            .unwrap();
        if line.contains("holding the write lock") {
            break;
        }
    }
    // Keep reading its stderr so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    child
}

/// Under django-default (Django's defaults: deferred BEGIN, no retry), a
/// foreign process holding the write lock longer than the busy timeout makes
/// webui answer 503 with Retry-After, the class busy_timeout; the request
/// wrote nothing; once the lock is free, the same request is a 201.
#[test]
fn a_foreign_holder_under_django_default_is_a_503_with_retry_after_then_recovers() {
    let _serial = serial();
    let lab = TestLab::new(JournalMode::Delete, "qemux86:2").unwrap();
    let webui = lab
        .start(
            "webui",
            "webui",
            &["--preset", "django-default", "--busy-timeout", "1s"],
        )
        .unwrap();
    let mut holder = hold(&lab.db, "4s");
    let refused = create(&webui.url, "during", 2);
    assert_eq!(refused.status, 503, "{refused:?}");
    assert!(refused.retry_after.is_some(), "no Retry-After: {refused:?}");
    assert_eq!(refused.json()["class"], "busy_timeout", "{refused:?}");
    assert!(holder.wait().unwrap().success(), "the holder failed");
    let ok = create(&webui.url, "after", 2);
    assert_eq!(ok.status, 201, "{ok:?}");
    assert_eq!(requests_of(&lab.db, "during"), 0, "the 503 wrote rows");
    assert_eq!(requests_of(&lab.db, "after"), 2);
    let s = stats(&webui.url);
    assert!(failed(&s, "busy_timeout") >= 1, "{s}");
    assert!(s["gave_up"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(integrity(&lab.db), "ok");
}

/// Under robust (IMMEDIATE, WAL, backoff within LAB_RETRY_DEADLINE), the same
/// holder only delays the request: its failures are retried, it is answered
/// 201, and nothing gave up.
#[test]
fn a_foreign_holder_under_robust_is_retried_and_answered_201() {
    let _serial = serial();
    let lab = TestLab::new(JournalMode::Wal, "qemux86:2").unwrap();
    let webui = lab
        .start(
            "webui",
            "webui",
            &["--preset", "robust", "--busy-timeout", "1s"],
        )
        .unwrap();
    let mut holder = hold(&lab.db, "4s");
    let answered = create(&webui.url, "during", 2);
    assert!(holder.wait().unwrap().success(), "the holder failed");
    assert_eq!(answered.status, 201, "{answered:?}");
    assert_eq!(requests_of(&lab.db, "during"), 2);
    let s = stats(&webui.url);
    assert!(
        failed(&s, "busy_timeout") >= 1,
        "the request should have waited past the busy timeout at least once: {s}"
    );
    assert!(s["retried"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(s["gave_up"], 0, "{s}");
    assert_eq!(integrity(&lab.db), "ok");
}

/// The daemon's one-line refusal (stderr), or its exit status if it started.
fn refusal(db: &Path, dir: &Path, as_user: bool) -> (Option<i32>, String) {
    let mut cmd = if as_user {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
        c.arg(testkit::binary_path("webui").unwrap());
        c
    } else {
        Command::new(testkit::binary_path("webui").unwrap())
    };
    for v in daemon::spawn::setting_variables() {
        cmd.env_remove(v);
    }
    let mut child = cmd
        .arg("--database-url")
        .arg(db)
        .args(["--listen", "127.0.0.1:0", "--stats-out"])
        .arg(dir.join("stats.json"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("setpriv (util-linux) is needed: apt-get install util-linux");
    let status = wait_for("the refusal", Duration::from_secs(20), || {
        child.try_wait().ok().flatten()
    });
    if status.is_err() {
        let _ = child.kill();
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut text).unwrap();
    (status.ok().and_then(|s| s.code()), text)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A database this user may not write is refused at startup in one line
/// that says what to fix: a read-only file, and a read-only directory (where
/// SQLite creates its journal). The tests run as root (CI does): root writes
/// anything, so the daemon runs as nobody through setpriv.
#[test]
fn a_read_only_file_or_directory_is_refused_at_startup() {
    assert!(
        is_root(),
        "this test needs root, to run the daemon as another user (CI runs as root)"
    );
    let lab = TestLab::new(JournalMode::Wal, "qemux86:1").unwrap();
    // The temp dir is 0700: nobody must be able to enter it to find the file.
    std::fs::set_permissions(
        lab.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let (code, text) = refusal(&lab.db, lab.path(), true);
    assert_eq!(code, Some(2), "{text}");
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {text}");
    assert!(
        lines[0].contains("cannot start")
            && lines[0].contains("the file")
            && lines[0].contains("not writable by uid 65534"),
        "{text}"
    );
    // The file is nobody's now, its directory still root's.
    let c = std::ffi::CString::new(lab.db.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::chown(c.as_ptr(), 65534, 65534) }, 0);
    let (code, text) = refusal(&lab.db, lab.path(), true);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("its directory") && text.contains("not writable by uid 65534"),
        "{text}"
    );
}

/// A small tmpfs, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        assert!(
            is_root(),
            "this test needs root, to mount a small tmpfs (CI runs as root)"
        );
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "mount -t tmpfs failed");
        Tmpfs(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// Fills the file system: a file grown until the disk says ENOSPC.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        // The last partial pages too.
        while f.write(&[0u8; 512]).map(|n| n > 0).unwrap_or(false) {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// A full disk (a real ENOSPC, on a 4 MB tmpfs): under django-default webui
/// answers 503, counts an `other` failure, and logs one line that says the
/// disk is full; once space is back the same request is a 201 and
/// integrity_check is ok. Under robust, a request made while the disk is
/// full is retried until space comes back, and is answered 201.
#[test]
fn a_full_disk_is_a_503_then_recovers_and_robust_retries_through_it() {
    let _serial = serial();
    let fs = Tmpfs::mount("4m");
    let db = fs.path().join("lab.sqlite3");
    let envs = schema::settings::parse_environments("qemux86:2").unwrap();
    schema::migrate::migrate(
        &schema::db::DbTarget::Sqlite(db.clone()),
        JournalMode::Wal,
        &envs,
    )
    .unwrap();
    let logs = tempfile::tempdir().unwrap();
    let default = testkit::start(
        "webui",
        "webui",
        &db,
        logs.path(),
        &["--preset", "django-default"],
    )
    .unwrap();
    // Rows first, so that the file and its WAL have pages to fill.
    assert_eq!(create(&default.url, "before", 20).status, 201);
    let filler = fs.fill();
    let mut refused = None;
    // A commit can still fit in WAL pages already there: write until one fails.
    for i in 0..200 {
        let a = create(&default.url, &format!("full-{i}"), 20);
        if a.status != 201 {
            refused = Some(a);
            break;
        }
    }
    let refused = refused.expect("no request failed on a full disk");
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.json()["class"], "other", "{refused:?}");
    let clear = |l: &str| l.contains("class=other") && l.contains("the disk is full");
    let found = wait_for(
        "the disk-full line in the log",
        Duration::from_secs(10),
        || default.log_text().lines().any(clear).then_some(()),
    );
    assert!(
        found.is_ok(),
        "no clear line in the log:\n{}",
        default.log_text()
    );
    assert!(failed(&stats(&default.url), "other") >= 1);
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(create(&default.url, "after", 5).status, 201);
    assert_eq!(requests_of(&db, "after"), 5);
    drop(default);

    let robust = testkit::start(
        "webui",
        "webui-robust",
        &db,
        logs.path(),
        &["--preset", "robust"],
    )
    .unwrap();
    let filler = fs.fill();
    let url = robust.url.clone();
    let request = std::thread::spawn(move || {
        // Several requests, so that one needs a new page of the full disk.
        (0..50)
            .map(|i| create(&url, &format!("robust-{i}"), 20).status)
            .collect::<Vec<u16>>()
    });
    wait_for(
        "a disk-full failure in webui-robust",
        Duration::from_secs(60),
        || (failed(&stats(&robust.url), "other") >= 1).then_some(()),
    )
    .unwrap();
    std::fs::remove_file(&filler).unwrap();
    let statuses = request.join().unwrap();
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    let s = stats(&robust.url);
    assert_eq!(s["gave_up"], 0, "{s}");
    assert!(s["retried"].as_u64().unwrap() >= 1, "{s}");
    for i in 0..50 {
        assert_eq!(requests_of(&db, &format!("robust-{i}")), 20);
    }
    assert_eq!(integrity(&db), "ok");
}

/// Overwrites page `page` (1-based) of the file with garbage.
fn corrupt_page(db: &Path, page: i64) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(db).unwrap();
    f.seek(SeekFrom::Start((page as u64 - 1) * 4096)).unwrap();
    f.write_all(&[0xA5u8; 4096]).unwrap();
}

fn root_page(db: &Path, table: &str) -> i64 {
    diesel::sql_query("SELECT rootpage AS n FROM sqlite_master WHERE name = ?")
        .bind::<diesel::sql_types::Text, _>(table)
        .get_result::<Count>(&mut sqlite(db))
        .unwrap()
        .n
}

/// A corrupt database: the pages the startup check reads (the migrations
/// table) are refused at startup in one line; a page of a table it does not
/// read (the build requests) starts, then answers 503 with an `other`
/// failure and a log line that says the file is corrupt.
#[test]
fn a_corrupt_page_is_refused_at_startup_or_a_503() {
    let lab = TestLab::new(JournalMode::Delete, "qemux86:1").unwrap();
    let copy = lab.path().join("copy.sqlite3");
    std::fs::copy(&lab.db, &copy).unwrap();

    // The whole migrations table: its rows and its primary-key index (the
    // check's read of the versions may use either).
    for name in [
        "__diesel_schema_migrations",
        "sqlite_autoindex___diesel_schema_migrations_1",
    ] {
        corrupt_page(&lab.db, root_page(&lab.db, name));
    }
    let (code, text) = refusal(&lab.db, lab.path(), false);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("cannot start") && text.contains("malformed"),
        "{text}"
    );

    let page = root_page(&copy, "build_request");
    corrupt_page(&copy, page);
    let webui = testkit::start(
        "webui",
        "webui",
        &copy,
        lab.path(),
        &["--preset", "django-default"],
    )
    .unwrap();
    let a = create(&webui.url, "p", 1);
    assert_eq!(a.status, 503, "{a:?}");
    assert_eq!(a.json()["class"], "other", "{a:?}");
    assert!(
        webui
            .wait_log(Duration::from_secs(10), |l| l.contains("class=other")
                && l.contains("corrupt"))
            .is_some(),
        "{}",
        webui.log_text()
    );
    assert!(failed(&stats(&webui.url), "other") >= 1);
}
