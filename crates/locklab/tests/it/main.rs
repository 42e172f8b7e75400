//! End-to-end tests of the CLI: the real `locklab` binary driving the real
//! daemon binaries (built by `cargo build --workspace`).
#![allow(clippy::unwrap_used)]

mod bench;
mod check;
mod cli;
mod faults;
mod flow;
mod papercuts;
mod presets;
mod servers;
mod startup;
mod supervise;
mod who;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

/// Runs that create contention go one at a time: two at once on two cores
/// distort each other.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// `locklab ARGS` with none of the caller's LAB_* or demo variables.
pub fn locklab(args: &[&str], cwd: &Path) -> Output {
    let bin = testkit::binary_path("locklab").unwrap();
    let mut cmd = Command::new(bin);
    for v in daemon::spawn::setting_variables() {
        cmd.env_remove(v);
    }
    cmd.env_remove("DATABASE_URL").env("RUST_LOG", "warn");
    cmd.args(args).current_dir(cwd).output().unwrap()
}

pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The load every test run uses: 4 HTTP clients, NUM 50, no sleep (the
/// original demo's), small builds so the ingester completes many of them, and a
/// quick scheduler so that many claims meet the other writers.
pub const SMALL_LOAD: &[&str] = &[
    "--clients",
    "4",
    "--num",
    "50",
    "--sleep",
    "0",
    "--events-per-build",
    "10",
    "--poll-interval",
    "100ms",
];
