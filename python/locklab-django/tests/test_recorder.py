"""The recorder, on a real Django app with two contending processes.

    python -m unittest -v test_recorder        (from this folder, in a venv with
                                                Django and locklab-django)

Two OS processes share one SQLite file in WAL mode, with a 0.3 s timeout:
- webui (LOCKLAB_PROCESS_NAME=webui): `manage.py webload`, requests to a view
  that inserts a hit (autocommit), then in one atomic() block reads a free
  environment and saves it (read-then-write);
- ingest: `manage.py ingest`, event inserts (autocommit), and every 30th in a
  transaction held open for 0.5 s: an atomic() block, or (alternately) a
  manual-mode transaction committed by set_autocommit(True), as Toaster's
  buildinfohelper syncs.

Each process measures its own failures at the call site (step, duration,
sqlite_errorname) and prints them. The test then reads the recorder's trace
files and asserts, per process, that the trace holds the same failures: the
same classes (derived from the process's own error names and durations), the
same extended codes, the same verbs for the same steps, under the right
process and op names. It also asserts that contention really happened (webui
got busy_timeout, and busy_upgrade or busy_snapshot), that every line carries
the fields of locklab's TraceEvent, and that ingest's long transactions are in
the trace as held spans that cover webui's busy_timeout failures.
"""

import glob
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
TIMEOUT_S = 0.3
CLASSES = ["busy_upgrade", "busy_snapshot", "busy_timeout", "locked", "other"]
STEP_VERB = {"hit": "INSERT", "read": "SELECT", "lock": "UPDATE", "commit": "COMMIT", "insert": "INSERT"}
# the fields of locklab's schema::trace::TraceEvent, and the JSON types they take
FIELDS = {
    "process": (str,),
    "op": (str,),
    "kind": (str,),
    "wait_start_us": (int,),
    "acquired_us": (int, type(None)),
    "end_us": (int,),
    "outcome": (str,),
    "class": (str, type(None)),
    "txn": (int,),
    "attempt": (int,),
    "phase": (str, type(None)),
    "waited_ms": (float, int, type(None)),
    "code": (int, type(None)),
}


def expected_class(failure):
    """The lab's rule, applied to what the process itself measured."""
    name = failure["errorname"]
    if name == "SQLITE_BUSY_SNAPSHOT":
        return "busy_snapshot"
    if name == "SQLITE_BUSY":
        return "busy_upgrade" if failure["waited_ms"] < TIMEOUT_S * 1000 / 2 else "busy_timeout"
    if name and name.startswith("SQLITE_LOCKED"):
        return "locked"
    return "other"


def run(cmd, env, **kw):
    return subprocess.run(cmd, env=env, cwd=HERE, check=True, capture_output=True, text=True, **kw)


class RecorderTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        tmp = cls.tmp = Path(tempfile.mkdtemp(prefix="locklab-recorder-"))
        db = tmp / "app.sqlite3"
        cls.trace_dir = tmp / "traces"
        base = dict(os.environ)
        base.update(
            {
                "PYTHONPATH": str(HERE),
                "DJANGO_SETTINGS_MODULE": "recapp.settings",
                "RECAPP_DB": str(db),
                "RECAPP_TIMEOUT": str(TIMEOUT_S),
                "RECAPP_TRACE_DIR": str(tmp / "setup-traces"),
            }
        )
        base.pop("LOCKLAB_PROCESS_NAME", None)
        base.pop("LOCKLAB_TRACE_DIR", None)
        py = sys.executable
        run([py, "manage.py", "migrate", "--run-syncdb", "-v", "0"], base)
        run(
            [py, "manage.py", "shell", "-c",
             "from recapp.models import Environment as E; "
             "E.objects.bulk_create(E(name='qemux86-%d' % i) for i in range(3))"],
            base,
        )
        conn = sqlite3.connect(str(db))
        assert conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
        conn.close()

        env = dict(base, RECAPP_TRACE_DIR=str(cls.trace_dir))
        start_at = str(time.time() + 2.0)
        web = subprocess.Popen(
            [py, "manage.py", "webload", os.environ.get("RECORDER_REQUESTS", "700"), "--start-at", start_at],
            env=dict(env, LOCKLAB_PROCESS_NAME="webui"), cwd=HERE, stdout=subprocess.PIPE, text=True,
        )
        ingest = subprocess.Popen(
            [py, "manage.py", "ingest", os.environ.get("RECORDER_EVENTS", "300"), "--start-at", start_at],
            env=env, cwd=HERE, stdout=subprocess.PIPE, text=True,
        )
        cls.own = {}
        for name, proc in (("webui", web), ("ingest", ingest)):
            out, _ = proc.communicate(timeout=120)
            if proc.returncode != 0:
                raise RuntimeError("%s exited %d" % (name, proc.returncode))
            cls.own[name] = json.loads(out.strip().splitlines()[-1])
        cls.files = sorted(glob.glob(str(cls.trace_dir / "trace-*.jsonl")))
        cls.events = []
        for path in cls.files:
            with open(path) as f:
                cls.events += [json.loads(line) for line in f if line.strip()]
        cls.print_summary()

    @classmethod
    def tearDownClass(cls):
        if os.environ.get("RECORDER_KEEP") == "1":
            print("run folder kept: %s" % cls.tmp, file=sys.stderr)
        else:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def failed(cls, process):
        return [e for e in cls.events if e["process"] == process and e["outcome"] == "failed"]

    @classmethod
    def print_summary(cls):
        print("\nper-process failures by class: what the process saw / what the trace says", file=sys.stderr)
        print("  %-8s %-10s %s" % ("process", "source", "  ".join("%13s" % c for c in CLASSES[:3])), file=sys.stderr)
        for name in ("webui", "ingest"):
            own = Counter(expected_class(f) for f in cls.own[name]["failures"])
            traced = Counter(e["class"] for e in cls.failed(name))
            for source, c in (("itself", own), ("trace", traced)):
                print("  %-8s %-10s %s" % (name, source, "  ".join("%13d" % c[k] for k in CLASSES[:3])), file=sys.stderr)
        held, total = cls.holder_count()
        print("  ingest held it at %d of %d webui busy_timeout failures" % (held, total), file=sys.stderr)

    @classmethod
    def holder_count(cls):
        spans = [
            (e["acquired_us"], e["end_us"])
            for e in cls.events
            if e["process"] == "ingest" and e["outcome"] == "commit" and e["kind"] in ("txn", "sync")
            and e["acquired_us"]
        ]
        timeouts = [e for e in cls.failed("webui") if e["class"] == "busy_timeout"]
        held = sum(any(a <= e["end_us"] <= b for a, b in spans) for e in timeouts)
        return held, len(timeouts)

    def test_one_file_per_process(self):
        names = sorted(os.path.basename(p) for p in self.files)
        want = sorted(
            "trace-%s-%d.jsonl" % (name, self.own[name]["pid"]) for name in ("webui", "ingest")
        )
        self.assertEqual(names, want)

    def test_every_line_is_a_trace_event(self):
        self.assertTrue(self.events)
        for e in self.events:
            for field, types in FIELDS.items():
                self.assertIn(field, e)
                self.assertIsInstance(e[field], types, "%s in %s" % (field, e))
            self.assertIn(e["class"], CLASSES + [None])
            self.assertIn(e["kind"], ["txn", "autocommit", "statement", "sync"])
            self.assertIn(e["outcome"], ["failed", "commit", "rollback"])
            self.assertIsInstance(e["pid"], int)
            self.assertIsInstance(e["verb"], str)
            self.assertLessEqual(e["wait_start_us"], e["end_us"])
            if e["outcome"] == "failed":
                self.assertIsNotNone(e["class"])
                self.assertIsNotNone(e["waited_ms"])

    def test_classes_equal_what_each_process_saw(self):
        for name in ("webui", "ingest"):
            with self.subTest(process=name):
                own = Counter(expected_class(f) for f in self.own[name]["failures"])
                traced = Counter(e["class"] for e in self.failed(name))
                self.assertEqual(traced, own)

    def test_codes_and_verbs_equal_what_each_process_saw(self):
        for name in ("webui", "ingest"):
            with self.subTest(process=name):
                own = Counter(
                    (expected_class(f), f["code"], STEP_VERB[f["step"]]) for f in self.own[name]["failures"]
                )
                traced = Counter((e["class"], e["code"], e["verb"]) for e in self.failed(name))
                self.assertEqual(traced, own)

    def test_process_op_and_pid(self):
        for e in self.failed("webui"):
            self.assertEqual(e["op"], "claim")  # the view, named by the middleware
            self.assertEqual(e["pid"], self.own["webui"]["pid"])
        for e in self.failed("ingest"):
            self.assertEqual(e["op"], "ingest")  # the management command
            self.assertEqual(e["pid"], self.own["ingest"]["pid"])

    def test_contention_happened(self):
        c = Counter(e["class"] for e in self.failed("webui"))
        self.assertGreater(c["busy_timeout"], 0, "no webui busy_timeout: the holds did not overlap the requests")
        self.assertGreater(c["busy_upgrade"] + c["busy_snapshot"], 0, "no read-then-write failure in webui")
        upgrade_verbs = {e["verb"] for e in self.failed("webui") if e["class"] in ("busy_upgrade", "busy_snapshot")}
        self.assertEqual(upgrade_verbs, {"UPDATE"}, "the write after the read is what fails")

    def test_long_transactions_are_held_spans(self):
        holds = self.own["ingest"]["holds"]
        spans = [
            e for e in self.events
            if e["process"] == "ingest" and e["outcome"] == "commit" and e["kind"] in ("txn", "sync")
        ]
        self.assertEqual(len(spans), len(holds))
        self.assertEqual({e["kind"] for e in spans}, {"txn", "sync"}, "atomic() and manual-mode commits")
        for e in spans:
            self.assertGreaterEqual(e["end_us"] - e["acquired_us"], 400_000)
        held, total = self.holder_count()
        self.assertGreaterEqual(2 * held, total, "ingest held the lock at fewer than half of webui's busy_timeout")


if __name__ == "__main__":
    unittest.main()
