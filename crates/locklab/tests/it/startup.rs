//! webui's read-only startup check refuses bad files in one line and creates
//! nothing (runbuilds and buildinfohelper have the same test in their crates).

use std::path::Path;

fn listing(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    v.sort();
    v
}

fn refuses(db: &Path, expect: &str) {
    let dir = db.parent().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let before = listing(dir);
    let err = match daemon::testkit::start("webui", "webui", db, logs.path(), &[]) {
        Ok(_) => panic!("webui started on {}", db.display()),
        Err(e) => format!("{e:#}"),
    };
    let refusal: Vec<&str> = err.lines().filter(|l| l.contains("cannot start")).collect();
    assert_eq!(refusal.len(), 1, "one line says why: {err}");
    assert!(refusal[0].contains(expect), "expected {expect:?}: {err}");
    assert_eq!(
        before,
        listing(dir),
        "the startup check created or changed nothing"
    );
}

#[test]
fn webui_refuses_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    refuses(&dir.path().join("missing.sqlite3"), "no such database file");
    std::fs::write(dir.path().join("empty.sqlite3"), "").unwrap();
    refuses(&dir.path().join("empty.sqlite3"), "empty");
    std::fs::write(dir.path().join("notes.txt"), "not a database\n".repeat(300)).unwrap();
    refuses(&dir.path().join("notes.txt"), "not an SQLite database");
    let lab =
        daemon::testkit::TestLab::new(schema::settings::JournalMode::Delete, "qemux86:1").unwrap();
    let mut conn = lab.conn(schema::db::Policy::default()).unwrap();
    schema::plant::forget_migrations(conn.diesel()).unwrap();
    drop(conn);
    refuses(&lab.db, "pending");
}
