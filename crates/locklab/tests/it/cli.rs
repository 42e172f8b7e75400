//! Bad CLI input gets a clear message and a non-zero exit, never a panic.

use crate::{locklab, text};

fn refused(args: &[&str], dir: &std::path::Path, expect: &str) {
    let out = locklab(args, dir);
    let (stdout, stderr) = text(&out);
    assert!(
        !out.status.success(),
        "{args:?} should fail:\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains(expect),
        "{args:?}: expected {expect:?} in stderr, got:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
    assert!(
        !stderr.contains("RUST_BACKTRACE"),
        "{args:?} printed a backtrace hint:\n{stderr}"
    );
}

#[test]
fn bad_input_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    refused(
        &["run", "--preset", "nope", "--out", "o"],
        d,
        "unknown preset \"nope\"",
    );
    refused(
        &["run", "--duration", "soon", "--out", "o"],
        d,
        "not a duration",
    );
    refused(
        &["matrix", "--presets", "django-default,bogus"],
        d,
        "unknown preset \"bogus\"",
    );
    // an --out that cannot be created (a file is in the way)
    std::fs::write(d.join("blocker"), "x").unwrap();
    refused(
        &["run", "--out", "blocker/sub", "--duration", "1s"],
        d,
        "cannot create the out folder",
    );
    // an existing file without --reuse
    std::fs::write(d.join("mine.sqlite3"), "").unwrap();
    refused(
        &[
            "run",
            "--out",
            "o2",
            "--duration",
            "1s",
            "--database-url",
            "mine.sqlite3",
        ],
        d,
        "pass --reuse",
    );
    // a file that is not an SQLite database
    std::fs::write(d.join("notes.txt"), "hello\n".repeat(100)).unwrap();
    refused(
        &[
            "run",
            "--out",
            "o3",
            "--duration",
            "1s",
            "--database-url",
            "notes.txt",
            "--reuse",
        ],
        d,
        "not an SQLite database",
    );
    refused(
        &["check", "--database-url", "notes.txt"],
        d,
        "not an SQLite database",
    );
    refused(
        &["migrate", "--database-url", "notes.txt"],
        d,
        "not an SQLite database",
    );
    assert_eq!(
        std::fs::read_to_string(d.join("notes.txt")).unwrap(),
        "hello\n".repeat(100)
    );
    refused(
        &["check", "--database-url", "missing.sqlite3"],
        d,
        "no such database file",
    );
    assert!(!d.join("missing.sqlite3").exists());
    refused(&["report", "nowhere"], d, "nowhere");
    refused(&["probe", "http://127.0.0.1:9/healthz"], d, "probe:");
}

#[test]
fn missing_daemon_binaries_say_how_to_build_them() {
    let dir = tempfile::tempdir().unwrap();
    let lonely = dir.path().join("locklab");
    std::fs::copy(testkit::binary_path("locklab").unwrap(), &lonely).unwrap();
    let out = std::process::Command::new(&lonely)
        .args(["run", "--duration", "1s", "--out"])
        .arg(dir.path().join("o"))
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("missing daemon binary `webui`"), "{stderr}");
    assert!(stderr.contains("cargo build --release"), "{stderr}");
}

#[test]
fn help_and_presets() {
    use clap::CommandFactory;
    locklab::Cli::command().debug_assert();
    let dir = tempfile::tempdir().unwrap();
    let out = locklab(&["presets"], dir.path());
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    for p in schema::settings::PRESETS {
        assert!(stdout.contains(p.name), "presets lacks {}", p.name);
    }
    assert!(
        stdout.contains("power loss"),
        "the durability note is printed:\n{stdout}"
    );
    for sub in [
        "run", "matrix", "check", "report", "timeline", "loadgen", "migrate", "probe",
    ] {
        let out = locklab(&[sub, "--help"], dir.path());
        assert!(out.status.success(), "{sub} --help");
        assert!(text(&out).0.contains("Usage"), "{sub} --help");
    }
}

#[test]
fn migrate_is_idempotent_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let out = locklab(
        &[
            "migrate",
            "--database-url",
            "m.sqlite3",
            "--journal-mode",
            "wal",
        ],
        dir.path(),
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("created")
            && stdout.contains("journal_mode=wal")
            && stdout.contains("7 added"),
        "{stdout}"
    );
    let out = locklab(
        &[
            "migrate",
            "--database-url",
            "m.sqlite3",
            "--journal-mode",
            "wal",
        ],
        dir.path(),
    );
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("0 migration(s) applied") && stdout.contains("0 added, 7 in all"),
        "{stdout}"
    );
}
