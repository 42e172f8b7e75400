//! `migrate` and the daemons' read-only startup check.

use schema::db::DbTarget;
use schema::migrate::{migrate, startup_check, SchemaError};
use schema::models::Environment;
use schema::settings::{parse_environments, JournalMode, DEFAULT_ENVIRONMENTS};

use crate::{policy, TestDb};
use schema::settings::TxnMode;

#[test]
fn migrate_creates_everything_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let target = DbTarget::Sqlite(dir.path().join("new.sqlite3"));
    let envs = parse_environments(DEFAULT_ENVIRONMENTS).unwrap();
    let first = migrate(&target, JournalMode::Wal, &envs).unwrap();
    assert!(first.created_file);
    assert!(!first.applied.is_empty());
    assert_eq!(first.journal_mode, "wal");
    assert_eq!((first.environments_added, first.environments_total), (7, 7));
    let status = startup_check(&target).unwrap();
    for table in schema::schema::LAB_TABLES {
        assert!(status.tables.contains(*table), "missing {table}");
    }
    let before = std::fs::read(target.sqlite_path().expect("a file")).unwrap();
    let second = migrate(&target, JournalMode::Wal, &envs).unwrap();
    assert!(!second.created_file);
    assert!(second.applied.is_empty());
    assert_eq!(second.environments_added, 0);
    assert_eq!(second.environments_total, 7);
    let after = std::fs::read(target.sqlite_path().expect("a file")).unwrap();
    assert_eq!(before, after, "a second migrate changes nothing");
    let db = TestDb { dir, target };
    let mut conn = db.conn(policy(200, TxnMode::Deferred));
    let all = Environment::all(conn.diesel()).unwrap();
    assert_eq!(all.iter().filter(|e| e.kind == "qemux86").count(), 3);
    assert!(all.iter().any(|e| e.name == "qemux86-64-2"));
}

fn assert_refused_without_creating(path: &std::path::Path, expect: fn(&SchemaError) -> bool) {
    let before: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let err = startup_check(&DbTarget::Sqlite(path.to_path_buf())).expect_err("must refuse");
    assert!(expect(&err), "unexpected refusal: {err}");
    let line = err.to_string();
    assert!(!line.contains('\n'), "one line: {line}");
    let after: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after, "the check created nothing");
}

#[test]
fn startup_check_refuses_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.sqlite3");
    assert_refused_without_creating(&missing, |e| matches!(e, SchemaError::Missing { .. }));
    assert!(!missing.exists());

    let empty = dir.path().join("empty.sqlite3");
    std::fs::write(&empty, b"").unwrap();
    assert_refused_without_creating(&empty, |e| matches!(e, SchemaError::Empty { .. }));
    assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);

    let text = dir.path().join("notes.txt");
    std::fs::write(
        &text,
        "these are not the tables you are looking for\n".repeat(100),
    )
    .unwrap();
    assert_refused_without_creating(&text, |e| matches!(e, SchemaError::NotADatabase { .. }));

    let behind = dir.path().join("behind.sqlite3");
    let target = DbTarget::Sqlite(behind.clone());
    migrate(
        &target,
        JournalMode::Delete,
        &parse_environments("qemux86:1").unwrap(),
    )
    .unwrap();
    {
        let db = TestDb {
            dir: tempfile::tempdir().unwrap(),
            target: target.clone(),
        };
        let mut conn = db.conn(policy(200, TxnMode::Deferred));
        conn.execute_raw("DELETE FROM __diesel_schema_migrations")
            .unwrap();
    }
    assert_refused_without_creating(&behind, |e| matches!(e, SchemaError::Pending { .. }));
}

#[test]
fn migrate_refuses_foreign_files() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "hello\n".repeat(200)).unwrap();
    let envs = parse_environments("qemux86:1").unwrap();
    let err = migrate(&DbTarget::Sqlite(text.clone()), JournalMode::Delete, &envs)
        .expect_err("text file");
    assert!(matches!(err, SchemaError::NotADatabase { .. }), "{err}");
    assert_eq!(
        std::fs::read_to_string(&text).unwrap(),
        "hello\n".repeat(200)
    );

    let other = dir.path().join("other.sqlite3");
    let target = DbTarget::Sqlite(other.clone());
    migrate(&target, JournalMode::Delete, &envs).unwrap();
    {
        let db = TestDb {
            dir: tempfile::tempdir().unwrap(),
            target: target.clone(),
        };
        let mut conn = db.conn(policy(200, TxnMode::Deferred));
        conn.execute_raw("CREATE TABLE django_session (id INTEGER)")
            .unwrap();
    }
    let err = migrate(&target, JournalMode::Delete, &envs).expect_err("foreign table");
    assert!(
        matches!(err, SchemaError::Foreign { ref tables, .. } if tables.contains("django_session")),
        "{err}"
    );
    assert!(matches!(
        startup_check(&target),
        Err(SchemaError::Foreign { .. })
    ));
}
