//! The command line: --help, clap's own consistency check, and the startup
//! refusals (a missing, empty, text or unmigrated file): a non-zero exit, one
//! clear line, and nothing created or changed.

use std::process::Command;

use clap::CommandFactory;
use testkit::binary_path;

use crate::*;

const BINARY: &str = "buildinfohelper";

#[test]
fn help_lists_the_settings() {
    let out = Command::new(binary_path(BINARY).unwrap())
        .arg("--help")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "Usage: buildinfohelper",
        "--events-per-build",
        "--event-delay",
        "--commit",
        "--lease",
        "--preset",
        "LAB_EVENTS_PER_BUILD",
        "LAB_COMMIT",
    ] {
        assert!(text.contains(needle), "--help lacks {needle}:\n{text}");
    }
}

#[test]
fn clap_definition_is_consistent() {
    buildinfohelper::Config::command().debug_assert();
}

#[test]
fn refuses_missing_empty_text_and_unmigrated_files() {
    let _serial = serial();
    testkit::assert_refuses_bad_files(BINARY).unwrap();
}
