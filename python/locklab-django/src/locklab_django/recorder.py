"""The recorder: an execute wrapper and three small method wrappers on every
SQLite connection Django opens, writing locklab's trace format.

How it sees a lock error
------------------------
On `connection_created` it appends a wrapper to the connection's
`execute_wrappers` (the list `connection.execute_wrapper()` manages), so it
times every statement Django runs through a cursor, BEGIN and SAVEPOINT
included. Django issues COMMIT and ROLLBACK through sqlite3's own `commit()`
and `rollback()`, and a manual-mode sync through `set_autocommit(True)`, not
through a cursor, so it also wraps the connection's `_commit`, `_rollback` and
`_set_autocommit` (on that connection object only).

How it classifies (the lab's classes)
-------------------------------------
- SQLITE_BUSY_SNAPSHOT (extended code 517)             -> busy_snapshot
- SQLITE_BUSY, returned in under half the timeout       -> busy_upgrade: SQLite
  refused at once, without waiting: a deferred transaction that had read
  tried to write while another connection held or wanted the write lock
- SQLITE_BUSY, after about the timeout                  -> busy_timeout
- SQLITE_LOCKED (6) and its extended codes              -> locked
- any other "locked" error                              -> other
The error name and code come from sqlite3's exception (`sqlite_errorname`,
`sqlite_errorcode`, Python 3.11+). On older Pythons only the message and the
time are known: busy_snapshot cannot be told from busy_upgrade there, and both
are recorded as busy_upgrade with code null. The timeout is the connection's
OPTIONS["timeout"] (Python's default, 5 s, when unset).

The trace
---------
One JSON object per line in LOCKLAB_TRACE_DIR/trace-<process>-<pid>.jsonl,
with the fields of locklab's `schema::trace::TraceEvent`, plus `pid`, `verb`,
`errorname` and `timeout_ms`:
- failed calls: outcome "failed", the class, the call's own start and end
  (`wait_start_us`, `end_us`), `waited_ms` (how long the failing call took),
  `phase` (begin, body, commit, autocommit), `kind` ("txn" inside a
  transaction, "autocommit" for a statement on its own, "sync" for a
  manual-mode commit), `txn` (a per-process transaction number; 0 for
  autocommit), `attempt` (1 + the failures already seen in that transaction:
  a retry inside an open transaction, as Toaster's patched save does, counts
  up);
- with LOCKLAB_TRACE_COMMITS (default True), also each transaction that held
  the write lock, when it ends: outcome "commit" or "rollback", from the
  transaction's first statement (`wait_start_us`) through the moment it took
  the write lock (`acquired_us`) to its end; and each autocommit write as
  "autocommit"/"commit".
`acquired_us` is approximate: Python's sqlite3 offers no busy handler to say
when the lock was really obtained. It is the start of the statement that took
the lock (BEGIN IMMEDIATE, or the first write) when that statement took under
1 ms (SQLite's busy handler sleeps at least 1 ms, so it cannot have waited),
and the statement's end otherwise. Held spans are therefore never longer than
the truth by more than a millisecond.
"""

import contextvars
import itertools
import json
import logging
import os
import re
import sys
import threading
import time

from django.conf import settings
from django.core import checks
from django.db.backends.signals import connection_created

logger = logging.getLogger("locklab_django")

# The operation in progress: set by the middleware to the view's name.
current_op = contextvars.ContextVar("locklab_op", default=None)

WRITE_VERBS = frozenset(
    ["INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER"]
)
SQLITE_BUSY = 5
SQLITE_LOCKED = 6
SQLITE_BUSY_SNAPSHOT = 517
NO_WAIT_S = 0.001

_config = None
_txn_numbers = itertools.count(1)


def now_us():
    return time.time_ns() // 1000


def command_name(argv):
    """The management command in argv (`manage.py NAME`, `django-admin NAME`,
    `python -m django NAME`), or None."""
    if len(argv) < 2:
        return None
    prog = os.path.basename(argv[0])
    if prog.endswith("manage.py") or prog in ("django-admin", "django-admin.py"):
        return argv[1]
    if prog == "__main__.py" and os.path.basename(os.path.dirname(argv[0])) == "django":
        return argv[1]
    return None


def process_name(argv):
    configured = getattr(settings, "LOCKLAB_PROCESS_NAME", None) or os.environ.get(
        "LOCKLAB_PROCESS_NAME"
    )
    if configured:
        return configured
    command = command_name(argv)
    if command:
        return command
    prog = os.path.basename(argv[0]) if argv and argv[0] else "python"
    return prog[:-3] if prog.endswith(".py") else prog


class Config:
    def __init__(self, trace_dir, process, default_op, trace_commits):
        self.trace_dir = trace_dir
        self.process = process
        self.default_op = default_op
        self.trace_commits = trace_commits
        self._lock = threading.Lock()
        self._file = None
        self._pid = None

    def path(self, pid):
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", self.process)
        return os.path.join(self.trace_dir, "trace-%s-%d.jsonl" % (safe, pid))

    def write(self, event):
        line = json.dumps(event, separators=(",", ":")) + "\n"
        with self._lock:
            pid = os.getpid()
            if self._file is None or self._pid != pid:
                # first event, or a forked worker: its own file
                os.makedirs(self.trace_dir, exist_ok=True)
                self._file = open(self.path(pid), "a", encoding="utf-8")
                self._pid = pid
            self._file.write(line)
            self._file.flush()


def configure():
    """Called from AppConfig.ready(): reads the settings, connects the signal."""
    global _config
    trace_dir = getattr(settings, "LOCKLAB_TRACE_DIR", None) or os.environ.get(
        "LOCKLAB_TRACE_DIR"
    )
    if not trace_dir:
        _config = None
        return
    process = process_name(sys.argv)
    _config = Config(
        trace_dir=str(trace_dir),
        process=process,
        default_op=command_name(sys.argv) or process,
        trace_commits=bool(getattr(settings, "LOCKLAB_TRACE_COMMITS", True)),
    )
    connection_created.connect(install, dispatch_uid="locklab_django.install")


def check_settings(app_configs=None, **kwargs):
    if _config is None:
        return [
            checks.Warning(
                "locklab_django is installed but LOCKLAB_TRACE_DIR is not set: "
                "nothing is recorded.",
                id="locklab_django.W001",
            )
        ]
    return []


def error_codes(error):
    """(sqlite_errorname, sqlite_errorcode) of an error or of its cause:
    Django re-raises sqlite3's error as its own, with the original as cause."""
    for e in (error, getattr(error, "__cause__", None)):
        if e is None:
            continue
        name = getattr(e, "sqlite_errorname", None)
        code = getattr(e, "sqlite_errorcode", None)
        if name or code:
            return name, code
    return None, None


def classify(message, name, code, waited_s, timeout_s):
    """The lab's class of a failed call, or None when it is no lock error."""
    primary = code & 0xFF if isinstance(code, int) else None
    if name == "SQLITE_BUSY_SNAPSHOT" or code == SQLITE_BUSY_SNAPSHOT:
        return "busy_snapshot"
    if primary == SQLITE_LOCKED or (name or "").startswith("SQLITE_LOCKED"):
        return "locked"
    if primary == SQLITE_BUSY or (code is None and "database is locked" in message):
        return "busy_upgrade" if waited_s < timeout_s / 2 else "busy_timeout"
    if "locked" in message:
        return "other"
    return None


def verb_of(sql):
    words = sql.split(None, 1)
    return words[0].upper() if words else "?"


class ConnState:
    """What the recorder knows about one connection's open transaction."""

    def __init__(self, connection):
        self.connection = connection
        self.txn = 0
        self.started_us = None
        self.acquired_us = None
        self.failures = 0

    def timeout_s(self):
        try:
            return float(self.connection.settings_dict["OPTIONS"].get("timeout", 5.0))
        except (TypeError, ValueError):
            return 5.0

    def in_transaction(self):
        raw = self.connection.connection
        return raw is not None and raw.in_transaction

    def begin(self, started_us):
        self.txn = next(_txn_numbers)
        self.started_us = started_us
        self.acquired_us = None
        self.failures = 0

    def took_lock(self, started_us, ended_us, elapsed_s):
        if self.acquired_us is None:
            self.acquired_us = started_us if elapsed_s < NO_WAIT_S else ended_us

    def reset(self):
        self.txn = 0
        self.started_us = None
        self.acquired_us = None
        self.failures = 0

    def end(self, outcome, ended_us, kind="txn"):
        if self.txn and self.acquired_us is not None and _config and _config.trace_commits:
            emit(
                kind=kind,
                wait_start_us=self.started_us,
                acquired_us=self.acquired_us,
                end_us=ended_us,
                outcome=outcome,
                txn=self.txn,
                attempt=self.failures + 1,
                verb="COMMIT" if outcome == "commit" else "ROLLBACK",
            )
        self.reset()


def emit(**fields):
    cfg = _config
    if cfg is None:
        return
    event = {
        "process": cfg.process,
        "op": current_op.get() or cfg.default_op,
        "kind": fields.pop("kind"),
        "wait_start_us": fields.pop("wait_start_us"),
        "acquired_us": fields.pop("acquired_us", None),
        "end_us": fields.pop("end_us"),
        "outcome": fields.pop("outcome"),
        "class": fields.pop("klass", None),
        "txn": fields.pop("txn", 0),
        "attempt": fields.pop("attempt", 1),
        "phase": fields.pop("phase", None),
        "waited_ms": fields.pop("waited_ms", None),
        "code": fields.pop("code", None),
        "pid": os.getpid(),
    }
    event.update(fields)
    try:
        cfg.write(event)
    except OSError as e:  # never break the app for its trace
        logger.warning("locklab_django: cannot write the trace: %s", e)


def record_failure(state, error, verb, started_us, elapsed_s, in_txn_before, phase_hint=None):
    name, code = error_codes(error)
    timeout_s = state.timeout_s()
    klass = classify(str(error), name, code, elapsed_s, timeout_s)
    if klass is None:
        return
    if phase_hint:
        phase, kind = phase_hint
    elif verb in ("BEGIN", "SAVEPOINT") and not in_txn_before:
        phase, kind = "begin", "txn"
    elif in_txn_before or state.in_transaction():
        # inside a transaction, or in one that the failing statement opened
        # (sqlite3's implicit BEGIN in manual mode)
        phase, kind = "body", "txn"
    else:
        phase, kind = "autocommit", "autocommit"
    if kind == "autocommit":
        txn, attempt = 0, 1
    else:
        if not state.txn:
            state.begin(started_us)  # a failed BEGIN is an attempted transaction
        state.failures += 1
        txn, attempt = state.txn, state.failures
    emit(
        kind=kind,
        wait_start_us=started_us,
        end_us=now_us(),
        outcome="failed",
        klass=klass,
        txn=txn,
        attempt=attempt,
        phase=phase,
        waited_ms=round(elapsed_s * 1000, 3),
        code=code,
        verb=verb,
        errorname=name,
        timeout_ms=round(timeout_s * 1000),
    )
    if kind == "txn" and phase == "begin" and not state.in_transaction():
        state.reset()  # the BEGIN failed: nothing is open


def execute_wrapper(execute, sql, params, many, context):
    connection = context["connection"]
    state = connection._locklab_state
    in_txn_before = state.in_transaction()
    verb = verb_of(sql)
    started_us = now_us()
    started = time.perf_counter()
    try:
        result = execute(sql, params, many, context)
    except Exception as error:
        record_failure(state, error, verb, started_us, time.perf_counter() - started, in_txn_before)
        raise
    elapsed = time.perf_counter() - started
    ended_us = now_us()
    in_txn_after = state.in_transaction()
    if not in_txn_before and in_txn_after:
        if not state.txn:
            state.begin(started_us)
    takes_lock = verb in WRITE_VERBS or (
        verb == "BEGIN" and re.search(r"\b(IMMEDIATE|EXCLUSIVE)\b", sql, re.I)
    )
    if in_txn_after and takes_lock:
        state.took_lock(started_us, ended_us, elapsed)
    elif not in_txn_before and not in_txn_after and verb in WRITE_VERBS:
        if _config and _config.trace_commits:
            emit(
                kind="autocommit",
                wait_start_us=started_us,
                acquired_us=started_us if elapsed < NO_WAIT_S else ended_us,
                end_us=ended_us,
                outcome="commit",
                verb=verb,
            )
    elif in_txn_before and not in_txn_after:
        # ended by a statement: COMMIT, ROLLBACK, or RELEASE of the outer savepoint
        state.end("rollback" if verb == "ROLLBACK" else "commit", ended_us)
    return result


def wrap_commit(connection, original, kind):
    state = connection._locklab_state

    def commit(*args, **kwargs):
        was_open = state.in_transaction()
        started_us = now_us()
        started = time.perf_counter()
        try:
            result = original(*args, **kwargs)
        except Exception as error:
            if was_open:
                record_failure(
                    state, error, "COMMIT", started_us, time.perf_counter() - started,
                    True, phase_hint=("commit", kind),
                )
            raise
        if was_open and not state.in_transaction():
            state.end("commit", now_us(), kind=kind)
        return result

    return commit


def wrap_set_autocommit(connection, original):
    commit = wrap_commit(connection, original, "sync")

    def set_autocommit(autocommit):
        # Turning autocommit on commits an open manual-mode transaction.
        if autocommit:
            return commit(autocommit)
        return original(autocommit)

    return set_autocommit


def wrap_rollback(connection, original):
    state = connection._locklab_state

    def rollback(*args, **kwargs):
        result = original(*args, **kwargs)
        if state.txn and not state.in_transaction():
            state.end("rollback", now_us())
        return result

    return rollback


def install(sender, connection, **kwargs):
    """connection_created: on each new SQLite connection, once per wrapper."""
    if connection.vendor != "sqlite" or _config is None:
        return
    if getattr(connection, "_locklab_state", None) is None:
        connection._locklab_state = ConnState(connection)
        connection._commit = wrap_commit(connection, connection._commit, "txn")
        connection._rollback = wrap_rollback(connection, connection._rollback)
        connection._set_autocommit = wrap_set_autocommit(connection, connection._set_autocommit)
    else:
        connection._locklab_state.reset()  # a new connection: nothing is open
    if execute_wrapper not in connection.execute_wrappers:
        connection.execute_wrappers.append(execute_wrapper)
