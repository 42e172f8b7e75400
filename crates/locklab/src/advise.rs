//! `locklab advise`: what to change in your own stack, as code to paste, for
//! the failure classes of a report (or for all of them).
//!
//! The snippets are the files under `advice/` at the repository's root,
//! embedded verbatim, and each is run before and after by
//! `scripts/test-advice` (Django 4.2 and 5.2): the advice is tested, not
//! asserted. Each begins with what it changes and what it costs.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use schema::error::LockClass;

use crate::report::Report;

/// A stack to advise for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    Django42,
    Django51,
    Rails8,
}

impl Stack {
    pub fn parse_django(v: &str) -> Result<Stack, String> {
        match v.trim() {
            "4.2" => Ok(Stack::Django42),
            "5.1" | "5.2" | "6.0" => Ok(Stack::Django51),
            other => Err(format!(
                "Django {other:?}: advice exists for 4.2 and for 5.1 and later (5.1, 5.2)"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Stack::Django42 => "Django 4.2",
            Stack::Django51 => "Django 5.1+",
            Stack::Rails8 => "Rails 8",
        }
    }
}

/// One snippet: where it lives in the repository, and its text.
pub struct Snippet {
    pub path: &'static str,
    pub text: &'static str,
}

macro_rules! snippet {
    ($path:literal) => {
        Snippet {
            path: $path,
            text: include_str!(concat!("../../../", $path)),
        }
    };
}

const DJANGO51_SETTINGS: Snippet = snippet!("advice/django-5.1/settings_immediate.py");
const DJANGO42_SETTINGS: Snippet = snippet!("advice/django-4.2/settings.py");
const DJANGO42_BACKEND_INIT: Snippet = snippet!("advice/django-4.2/backend/__init__.py");
const DJANGO42_BACKEND: Snippet = snippet!("advice/django-4.2/backend/base.py");
const DJANGO42_WAL: Snippet = snippet!("advice/django-4.2/wal.py");
const GUARDED_CLAIM: Snippet = snippet!("advice/django/guarded_claim.py");
const TOASTER: Snippet = snippet!("advice/toaster/patched_save.md");
const RAILS8: Snippet = snippet!("advice/rails-8/database.yml");

/// What causes a class, in a sentence, and how to tell it.
fn mechanism(class: LockClass) -> &'static str {
    match class {
        LockClass::BusyUpgrade => {
            "busy_upgrade: `database is locked` at once, in far less than the timeout. A \
             deferred transaction read, then tried to write while another connection held the \
             write lock; SQLite refuses at once to avoid a deadlock, so no timeout helps. Cure: \
             begin write transactions IMMEDIATE, or write without reading first."
        }
        LockClass::BusySnapshot => {
            "busy_snapshot (WAL): SQLITE_BUSY_SNAPSHOT at once. Another connection committed \
             after this transaction's first read; its snapshot can never write, and a retry \
             inside the same transaction loops forever. Cure: as for busy_upgrade; retry the \
             whole transaction, never inside it."
        }
        LockClass::BusyTimeout => {
            "busy_timeout: `database is locked` after the whole timeout. Another connection \
             held the lock longer than that: find it (`locklab who`), shorten its write \
             transactions, batch its commits, use WAL so readers stop blocking commits; a \
             longer timeout trades the error for latency."
        }
        _ => "",
    }
}

/// The snippets for a class on a stack.
fn snippets(class: LockClass, stack: Stack) -> Vec<&'static Snippet> {
    match (class, stack) {
        (LockClass::BusyUpgrade | LockClass::BusySnapshot, Stack::Django51) => {
            vec![&DJANGO51_SETTINGS, &GUARDED_CLAIM]
        }
        (LockClass::BusyUpgrade | LockClass::BusySnapshot, Stack::Django42) => vec![
            &DJANGO42_BACKEND_INIT,
            &DJANGO42_BACKEND,
            &DJANGO42_SETTINGS,
            &GUARDED_CLAIM,
        ],
        (LockClass::BusyTimeout, Stack::Django51) => vec![&DJANGO51_SETTINGS],
        (LockClass::BusyTimeout, Stack::Django42) => vec![&DJANGO42_SETTINGS, &DJANGO42_WAL],
        (_, Stack::Rails8) => vec![&RAILS8],
        _ => Vec::new(),
    }
}

/// The classes a report's processes failed with (the three lock classes).
pub fn classes_of(r: &Report) -> BTreeSet<LockClass> {
    r.processes
        .iter()
        .flat_map(|p| {
            [
                LockClass::BusyUpgrade,
                LockClass::BusySnapshot,
                LockClass::BusyTimeout,
            ]
            .into_iter()
            .filter(|c| p.failed_of(*c) > 0)
            .collect::<Vec<_>>()
        })
        .collect()
}

/// The advice, as text: per class, the mechanism, then each snippet (once).
pub fn render(classes: &BTreeSet<LockClass>, stack: Stack, toaster: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "locklab advise — {} — for {}\n",
        stack.name(),
        classes
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut shown: BTreeSet<&str> = BTreeSet::new();
    for class in classes {
        let _ = writeln!(out, "## {}\n\n{}\n", class, mechanism(*class));
        for s in snippets(*class, stack) {
            if shown.insert(s.path) {
                let _ = writeln!(out, "---- {} ----\n{}", s.path, s.text.trim_end());
                let _ = writeln!(out);
            } else {
                let _ = writeln!(out, "(see {} above)\n", s.path);
            }
        }
    }
    if toaster {
        let _ = writeln!(
            out,
            "---- {} ----\n{}\n",
            TOASTER.path,
            TOASTER.text.trim_end()
        );
    }
    let _ = writeln!(
        out,
        "Costs, in short: IMMEDIATE makes write transactions (and read-only atomic() blocks) run \
         one at a time; synchronous=NORMAL in WAL can lose the last commits to a power loss or an \
         OS crash; ATOMIC_REQUESTS only helps together with IMMEDIATE, or it trades busy_timeout \
         for busy_upgrade. Every snippet is run before and after by scripts/test-advice."
    );
    out
}
