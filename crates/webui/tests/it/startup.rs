//! The read-only startup check: webui refuses a file it cannot serve, in one
//! clear line, exits non-zero, and creates or changes nothing.

use testkit::start;

/// Starts webui on `db` and returns its refusal (the last lines of its log).
fn refusal(dir: &std::path::Path, db: &std::path::Path) -> String {
    match start("webui", "webui", db, dir, &[]) {
        Ok(child) => panic!("webui started on {}: {}", db.display(), child.log_text()),
        Err(e) => format!("{e:#}"),
    }
}

fn assert_one_clear_line(refusal: &str, wanted: &str) {
    let lines: Vec<&str> = refusal
        .lines()
        .filter(|l| l.contains("webui: cannot start"))
        .collect();
    assert_eq!(lines.len(), 1, "one refusal line in {refusal}");
    assert!(lines[0].contains(wanted), "{wanted:?} in {refusal}");
    assert!(!refusal.contains("panicked"), "{refusal}");
}

#[test]
fn a_missing_file_is_refused_and_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("typo.sqlite3");
    let r = refusal(dir.path(), &db);
    assert_one_clear_line(&r, "no such database file");
    assert!(r.contains("locklab migrate"), "says how to fix it: {r}");
    assert!(!db.exists(), "no new empty database");
    assert!(!dir.path().join("stats-webui.json").exists());
}

#[test]
fn an_unmigrated_file_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    // A zero-length file is an empty SQLite database.
    let db = dir.path().join("empty.sqlite3");
    std::fs::write(&db, b"").unwrap();
    let r = refusal(dir.path(), &db);
    assert_one_clear_line(&r, "not migrated");
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0, "nothing written");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("empty.sqlite3"))
        .collect();
    assert_eq!(names, ["empty.sqlite3"], "no journal or WAL left behind");
}

#[test]
fn a_text_file_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("notes.txt");
    std::fs::write(&db, b"these are not the tables you are looking for\n").unwrap();
    let r = refusal(dir.path(), &db);
    assert_one_clear_line(&r, "not an SQLite database");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        b"these are not the tables you are looking for\n"
    );
}
