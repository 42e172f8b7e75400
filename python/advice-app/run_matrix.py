"""Runs the minimal app before and after the advice, for the Django installed
in this interpreter, prints the table and checks what the mechanism predicts.

    python run_matrix.py --advice ADVICE_DIR --work WORKDIR [--json OUT]

Five runs, each on a fresh SQLite file, each with three OS processes (view,
scheduler, writer) started together for a fixed number of iterations:

  before (delete)     Django's defaults: deferred BEGIN, rollback journal
  before (wal)        Django's defaults, with the file switched to WAL
  guarded claim only  as before (wal), but the scheduler claims with
                      advice/django/guarded_claim.py
  settings only       the settings snippet for this Django version pasted in:
                      the settings block (5.1+), or the backend subclass and
                      the connection_created handler (4.2); Toaster's claim
  after               both. The file starts in rollback mode in the last two
                      runs: the snippet must switch it to WAL itself, which it
                      does in the deploy step (`migrate` with the pasted
                      settings) before the three processes start.

Why a deploy step: the first connection under the snippet switches the file to
WAL, and that switch cannot wait for a writer. While another process holds the
write lock of a rollback-journal file, `PRAGMA journal_mode=WAL` fails at once
with "database is locked" whatever the timeout (measured: 0.0 s with a 5 s
timeout; 5 s, the whole timeout, against a reader). A CI run of this matrix hit
it when the three processes connected together (Django 5.2, init_command). The
advice says so and tells users to deploy with `migrate` first.

Exit status 0 only if every check holds (see CHECKS below).
"""

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import django

HERE = Path(__file__).resolve().parent
CLASSES = ["busy_upgrade", "busy_snapshot", "busy_timeout", "locked", "other"]
ROLES = ["view", "scheduler", "writer"]
READ_THEN_WRITE = ["view", "scheduler"]


def env_int(name, default):
    return int(os.environ.get(name, default))


ITERATIONS = {
    "view": env_int("ADVICE_VIEW_ITERS", 300),
    "scheduler": env_int("ADVICE_SCHEDULER_ITERS", 300),
    "writer": env_int("ADVICE_WRITER_ITERS", 900),
}
TIMEOUT_S = float(os.environ.get("ADVICE_TIMEOUT", "1"))


def paste(advice, app_dir, major_minor):
    """Copies the snippets for this Django version into the app, as a user
    would, and returns the environment that makes the app use them."""
    pasted = {}
    shutil.copy(advice / "django" / "guarded_claim.py", app_dir / "adviceapp" / "guarded_claim.py")
    if major_minor >= (5, 1):
        shutil.copy(advice / "django-5.1" / "settings_immediate.py", app_dir / "settings_snippet.py")
        pasted["ADVICE_SETTINGS"] = str(app_dir / "settings_snippet.py")
    else:
        shutil.copytree(advice / "django-4.2" / "backend", app_dir / "sqlite_immediate")
        shutil.copy(advice / "django-4.2" / "settings.py", app_dir / "settings_snippet.py")
        shutil.copy(advice / "django-4.2" / "wal.py", app_dir / "sqlite_wal.py")
        pasted["ADVICE_SETTINGS"] = str(app_dir / "settings_snippet.py")
        pasted["ADVICE_IMPORT"] = "sqlite_wal"
    return pasted


# name, DATABASES (before: Django's defaults; after: the pasted settings
# snippet), the scheduler's claim, the file's journal mode at the start
RUNS = [
    ("before (delete)", "before", "toaster", "delete"),
    ("before (wal)", "before", "toaster", "wal"),
    ("guarded claim only", "before", "guarded", "wal"),
    ("settings only", "after", "toaster", "delete"),
    ("after", "after", "guarded", "delete"),
]


def run_config(name, mode, claim, journal, advice, work, major_minor):
    run_dir = work / name.replace(" ", "-").replace("(", "").replace(")", "")
    shutil.rmtree(run_dir, ignore_errors=True)
    app_dir = run_dir / "app"
    shutil.copytree(HERE, app_dir, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    db = run_dir / "app.sqlite3"
    env = dict(os.environ)
    env.update(
        {
            "PYTHONPATH": str(app_dir),
            "DJANGO_SETTINGS_MODULE": "adviceapp.settings",
            "ADVICE_DB": str(db),
            "ADVICE_TIMEOUT": str(TIMEOUT_S),
            "ADVICE_MODE": "before",
        }
    )
    subprocess.run(
        [sys.executable, str(app_dir / "setup_db.py"), "3000", "3", journal],
        env=env, check=True, cwd=app_dir,
    )
    env.update(paste(advice, app_dir, major_minor))
    env["ADVICE_MODE"] = mode
    env["ADVICE_CLAIM"] = claim
    if mode == "before":
        env.pop("ADVICE_IMPORT", None)
    else:
        # The deploy step the advice prescribes: one connection with the pasted
        # settings, alone, switches the file before the processes start.
        subprocess.run(
            [sys.executable, "-c", "import django; django.setup(); "
             "from django.core.management import call_command; call_command('migrate', verbosity=0)"],
            env=env, check=True, cwd=app_dir,
        )
    start_at = time.time() + 2.0
    procs = {}
    for role in ROLES:
        out = run_dir / ("%s.json" % role)
        procs[role] = (
            subprocess.Popen(
                [sys.executable, str(app_dir / "proc.py"), role, str(ITERATIONS[role]), str(out), str(start_at)],
                env=env, cwd=app_dir,
            ),
            out,
        )
    results = {}
    for role, (proc, out) in procs.items():
        code = proc.wait(timeout=240)
        if code != 0:
            sys.exit("run_matrix: %s %s exited %d" % (name, role, code))
        with open(out) as f:
            results[role] = json.load(f)
    db_conn = sqlite3.connect(str(db))
    file_journal = db_conn.execute("PRAGMA journal_mode").fetchone()[0]
    integrity = db_conn.execute("PRAGMA integrity_check").fetchone()[0]
    db_conn.close()
    return {"name": name, "mode": mode, "file_journal": file_journal, "integrity": integrity, "processes": results}


def counts(proc):
    c = {k: 0 for k in CLASSES}
    for f in proc["failures"]:
        c[f["class"]] += 1
    return c


def overlap_share(run):
    spans = [(p["started"], p["ended"]) for p in run["processes"].values()]
    common = min(e for _, e in spans) - max(s for s, _ in spans)
    shortest = min(e - s for s, e in spans)
    return max(0.0, common) / shortest if shortest > 0 else 0.0


def fmt_fail_ms(proc):
    waits = [f["waited_ms"] for f in proc["failures"] if f["class"] in ("busy_upgrade", "busy_snapshot")]
    return "%.1f" % max(waits) if waits else "-"


def begins(proc):
    b = proc["begins"]
    if not b:
        return "-"
    return ", ".join("%s x%d" % (k.replace("BEGIN ", "").lower() if k != "BEGIN" else "deferred", v) for k, v in sorted(b.items()))


SYNC = {0: "off", 1: "normal", 2: "full", 3: "extra"}


def print_table(runs, header):
    print(header)
    cols = ["run", "process", "ok/iters", "upgrade", "snapshot", "timeout", "other", "fail ms", "slowest ok", "BEGIN", "file"]
    rows = []
    for run in runs:
        for role in ROLES:
            p = run["processes"][role]
            c = counts(p)
            rows.append(
                [
                    run["name"] if role == "view" else "",
                    role,
                    "%d/%d" % (p["ok"], p["iterations"]),
                    str(c["busy_upgrade"]),
                    str(c["busy_snapshot"]),
                    str(c["busy_timeout"]),
                    str(c["locked"] + c["other"]),
                    fmt_fail_ms(p),
                    "%.0f ms" % p["slowest_ok_ms"],
                    begins(p),
                    "%s/%s" % (p["journal_mode"], SYNC.get(p["synchronous"], str(p["synchronous"]))),
                ]
            )
    widths = [max(len(r[i]) for r in rows + [cols]) for i in range(len(cols))]
    right = {2, 3, 4, 5, 6, 7, 8}

    def line(r):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    print(line(cols))
    for r in rows:
        print(line(r))
    print("  upgrade, snapshot, timeout: failed calls by class (busy_upgrade, busy_snapshot, busy_timeout).")
    print("  fail ms: the slowest busy_upgrade or busy_snapshot call; they fail at once, the timeout is %.0f ms." % (TIMEOUT_S * 1000))
    print("  slowest ok: the slowest call that succeeded (lock waits included).")
    after_timeouts = sum(total(r, "busy_timeout") for r in runs if r["mode"] == "after")
    if after_timeouts:
        print(
            "  busy_timeout with IMMEDIATE: a wait for the write lock outlasted the timeout. No transaction here\n"
            "  holds it that long; SQLite's busy handler polls with growing sleeps and is not fair, so a\n"
            "  process running back-to-back IMMEDIATE blocks (the view) can starve the others. A timeout longer\n"
            "  than such bursts cures it (the snippets use 20 s)."
        )


class Checks:
    def __init__(self):
        self.lines = []
        self.ok = True

    def expect(self, title, conditions):
        """One line per claim; a failed claim lists the conditions that failed."""
        failed = [text for cond, text in conditions if not cond]
        self.ok &= not failed
        if failed:
            self.lines.append("FAIL %s: %s" % (title, "; ".join(failed)))
        else:
            self.lines.append("ok   %s: %s" % (title, "; ".join(text for _, text in conditions)))


def total(run, klass, roles=ROLES):
    return sum(counts(run["processes"][r])[klass] for r in roles)


def per_role(run, klass, roles):
    return ", ".join("%s %d" % (r, counts(run["processes"][r])[klass]) for r in roles)


def check(runs):
    """What the mechanism predicts, run by run."""
    by = {r["name"]: r for r in runs}
    c = Checks()
    shares = [overlap_share(run) for run in runs]
    c.expect(
        "every run",
        [
            (min(shares) >= 0.5, "the processes overlapped (%s%%)" % "/".join("%.0f" % (x * 100) for x in shares)),
            (all(run["integrity"] == "ok" for run in runs), "integrity_check ok"),
            (
                sum(total(run, "busy_upgrade", ["writer"]) + total(run, "busy_snapshot", ["writer"]) for run in runs) == 0,
                "the writer (no read before its write) never got busy_upgrade/busy_snapshot",
            ),
        ],
    )

    run = by["before (delete)"]
    c.expect(
        "before (delete)",
        [
            (total(run, "busy_upgrade", READ_THEN_WRITE) > 0, "busy_upgrade in %s" % per_role(run, "busy_upgrade", READ_THEN_WRITE)),
            (total(run, "busy_snapshot") == 0, "no busy_snapshot without WAL"),
            (run["processes"]["view"]["begins"].get("BEGIN", 0) > 0, "view began deferred"),
        ],
    )
    run = by["before (wal)"]
    c.expect(
        "before (wal)",
        [
            (total(run, "busy_snapshot", READ_THEN_WRITE) > 0, "busy_snapshot in %s" % per_role(run, "busy_snapshot", READ_THEN_WRITE)),
        ],
    )
    run = by["guarded claim only"]
    c.expect(
        "guarded claim only",
        [
            (
                total(run, "busy_upgrade", ["scheduler"]) + total(run, "busy_snapshot", ["scheduler"]) == 0,
                "scheduler has no busy_upgrade/busy_snapshot",
            ),
            (
                total(run, "busy_upgrade", ["view"]) + total(run, "busy_snapshot", ["view"]) > 0,
                "the deferred view still fails (%d)" % (total(run, "busy_upgrade", ["view"]) + total(run, "busy_snapshot", ["view"])),
            ),
        ],
    )
    for name in ("settings only", "after"):
        run = by[name]
        ps = run["processes"]
        c.expect(
            name,
            [
                (total(run, "busy_upgrade") + total(run, "busy_snapshot") == 0, "no busy_upgrade/busy_snapshot anywhere"),
                (all(p["ok"] > 0 for p in ps.values()), "ok %s" % ", ".join("%s %d" % (r, ps[r]["ok"]) for r in ROLES)),
                (run["file_journal"] == "wal", "the snippet switched the file to %s" % run["file_journal"]),
                (all(p["synchronous"] == 1 for p in ps.values()), "synchronous %s" % "/".join(SYNC.get(p["synchronous"], "?") for p in ps.values())),
                (
                    ps["view"]["begins"].get("BEGIN IMMEDIATE", 0) > 0 and ps["view"]["begins"].get("BEGIN", 0) == 0,
                    "view began IMMEDIATE",
                ),
            ],
        )
    return c.ok, c.lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--advice", required=True, type=Path)
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    major_minor = django.VERSION[:2]
    advice = args.advice.resolve()
    runs = [run_config(name, mode, claim, journal, advice, args.work, major_minor) for name, mode, claim, journal in RUNS]
    header = "Django %s, SQLite %s, timeout %.1f s, iterations: view %d, scheduler %d, writer %d" % (
        django.get_version(), sqlite3.sqlite_version, TIMEOUT_S,
        ITERATIONS["view"], ITERATIONS["scheduler"], ITERATIONS["writer"],
    )
    print_table(runs, header)
    ok, lines = check(runs)
    print()
    for line in lines:
        print(textwrap.fill(line, width=100, initial_indent="  ", subsequent_indent="         "))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"django": django.get_version(), "ok": ok, "runs": runs}, f)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
