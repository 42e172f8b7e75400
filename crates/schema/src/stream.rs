//! The deterministic build-event stream.
//!
//! A build's events are a pure function of its seed and length, so `check` can
//! regenerate what was emitted without trusting the ingester's counters. The
//! shape follows a real Toaster build: a few build variables, then for each
//! recipe its tasks (started, a few log lines, succeeded), packages after
//! `do_package`, and a closing note. ChaCha8 (rand_chacha) is used because its
//! output is specified and stable across platforms and crate versions.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::types::EventKind;

/// One event of a build's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamEvent {
    pub seq: i32,
    pub kind: EventKind,
    pub name: String,
    pub payload: String,
}

const RECIPES: &[&str] = &[
    "busybox",
    "glibc",
    "linux-yocto",
    "openssl",
    "zlib",
    "bash",
    "coreutils",
    "util-linux",
    "systemd",
    "dbus",
    "perl",
    "python3",
    "gcc-runtime",
    "binutils",
    "ncurses",
    "readline",
    "openssh",
    "curl",
    "expat",
    "libffi",
    "sqlite3",
    "xz",
    "bzip2",
    "e2fsprogs",
    "kmod",
    "udev-extraconf",
    "shadow",
    "base-files",
    "base-passwd",
    "initscripts",
    "sysvinit",
    "opkg-utils",
    "u-boot",
    "dropbear",
    "iptables",
    "libxml2",
    "gettext",
    "attr",
    "acl",
    "libcap",
];

const TASKS: &[&str] = &[
    "do_fetch",
    "do_unpack",
    "do_patch",
    "do_configure",
    "do_compile",
    "do_install",
    "do_package",
];

const LOG_LINES: &[&str] = &[
    "NOTE: Running task",
    "DEBUG: Executing shell function",
    "NOTE: recipe checksum matched sstate",
    "WARNING: QA Issue: package contains debug files",
    "NOTE: make -j 2",
    "DEBUG: Python function extend_recipe_sysroot finished",
];

const VARIABLES: &[&str] = &[
    "MACHINE",
    "DISTRO",
    "TUNE_FEATURES",
    "TARGET_SYS",
    "SDKMACHINE",
    "IMAGE_FSTYPES",
    "BB_NUMBER_THREADS",
    "PARALLEL_MAKE",
    "DL_DIR",
    "SSTATE_DIR",
    "TMPDIR",
    "PACKAGE_CLASSES",
];

/// Generates `count` events from `seed`.
pub fn generate(seed: i64, count: u32) -> Vec<StreamEvent> {
    Generator::new(seed)
        .take(usize::try_from(count).unwrap_or(usize::MAX))
        .collect()
}

/// Yields a build's events in order, forever (callers take what they need).
pub struct Generator {
    rng: ChaCha8Rng,
    seed: i64,
    seq: i32,
    pending: std::collections::VecDeque<(EventKind, String, String)>,
    recipe: usize,
    started: bool,
}

impl Generator {
    pub fn new(seed: i64) -> Generator {
        Generator {
            rng: ChaCha8Rng::seed_from_u64(seed as u64),
            seed,
            seq: 0,
            pending: Default::default(),
            recipe: 0,
            started: false,
        }
    }

    fn refill(&mut self) {
        if !self.started {
            self.started = true;
            self.pending.push_back((
                EventKind::Note,
                "BuildStarted".to_string(),
                format!(r#"{{"seed":{},"bitbake":"2.8"}}"#, self.seed),
            ));
            for var in VARIABLES {
                let value: u32 = self.rng.random_range(1..10_000);
                self.pending.push_back((
                    EventKind::Variable,
                    (*var).to_string(),
                    format!(
                        r#"{{"value":"{}-{value}","file":"conf/local.conf"}}"#,
                        var.to_ascii_lowercase()
                    ),
                ));
            }
            return;
        }
        let base = RECIPES[self.recipe % RECIPES.len()];
        let recipe = format!("{base}-{}", self.recipe / RECIPES.len());
        self.recipe += 1;
        let pv = format!(
            "{}.{}.{}",
            self.rng.random_range(1..10),
            self.rng.random_range(0..40),
            self.rng.random_range(0..20)
        );
        for task in TASKS {
            let name = format!("{recipe}:{task}");
            let pid: u32 = self.rng.random_range(1000..60_000);
            self.pending.push_back((
                EventKind::TaskStarted,
                name.clone(),
                format!(r#"{{"recipe":"{recipe}","pv":"{pv}","task":"{task}","pid":{pid}}}"#),
            ));
            let logs = self.rng.random_range(0..4);
            for _ in 0..logs {
                let line = LOG_LINES[self.rng.random_range(0..LOG_LINES.len())];
                let ms: u32 = self.rng.random_range(1..5000);
                self.pending.push_back((
                    EventKind::Log,
                    name.clone(),
                    format!(
                        r#"{{"level":"{}","msg":"{line} {task}","elapsed_ms":{ms}}}"#,
                        if line.starts_with("WARNING") {
                            "warning"
                        } else {
                            "info"
                        }
                    ),
                ));
            }
            let secs: u32 = self.rng.random_range(1..600);
            let sstate = self.rng.random_bool(0.3);
            self.pending.push_back((
                EventKind::TaskSucceeded,
                name.clone(),
                format!(
                    r#"{{"recipe":"{recipe}","task":"{task}","seconds":{secs},"sstate":{sstate}}}"#
                ),
            ));
            if *task == "do_package" {
                for suffix in ["", "-dev", "-dbg"]
                    .iter()
                    .take(self.rng.random_range(1..4))
                {
                    let size: u32 = self.rng.random_range(1_000..5_000_000);
                    self.pending.push_back((
                        EventKind::Package,
                        format!("{recipe}{suffix}"),
                        format!(r#"{{"version":"{pv}","size":{size},"arch":"core2-64"}}"#),
                    ));
                }
            }
        }
    }
}

impl Iterator for Generator {
    type Item = StreamEvent;

    fn next(&mut self) -> Option<StreamEvent> {
        while self.pending.is_empty() {
            self.refill();
        }
        let (kind, name, payload) = self.pending.pop_front()?;
        let event = StreamEvent {
            seq: self.seq,
            kind,
            name,
            payload,
        };
        self.seq += 1;
        Some(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let a = generate(42, 2000);
        let b = generate(42, 2000);
        assert_eq!(a, b);
        assert_eq!(a.len(), 2000);
        assert!(a.iter().enumerate().all(|(i, e)| e.seq as usize == i));
        assert_ne!(a, generate(43, 2000));
        // the stream looks like a build: tasks start and end
        let started = a
            .iter()
            .filter(|e| e.kind == EventKind::TaskStarted)
            .count();
        let ended = a.iter().filter(|e| e.kind.ends_task()).count();
        assert!(
            started > 100 && started.abs_diff(ended) <= 1,
            "{started} {ended}"
        );
        assert!(a.iter().any(|e| e.kind == EventKind::Package));
        // a prefix is a prefix
        assert_eq!(generate(42, 50)[..], a[..50]);
        // payloads are JSON
        for e in &a {
            serde_json::from_str::<serde_json::Value>(&e.payload).expect("json payload");
        }
    }
}
