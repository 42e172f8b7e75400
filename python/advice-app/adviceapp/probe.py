"""What a process of the minimal app saw: every OperationalError it caught,
with SQLite's error name and how long the failing call took.

The class follows from those two facts alone:
- SQLITE_BUSY_SNAPSHOT                          -> busy_snapshot
- SQLITE_BUSY, in less than half the timeout    -> busy_upgrade (SQLite
  refused at once, without waiting: a deferred transaction that had read
  tried to write)
- SQLITE_BUSY, after about the timeout          -> busy_timeout
- SQLITE_LOCKED*                                -> locked
- anything else                                 -> other

The failing call's duration is measured where it happens: an execute wrapper
times every statement (BEGIN included), and txn() times the COMMIT, which
Django issues through sqlite3's commit() rather than a cursor.
"""

import sys
import time
from collections import Counter
from contextlib import contextmanager

from django.db import connection, transaction


def sqlite_errorname(error):
    """Django re-raises sqlite3's error as its own; the original is the cause."""
    for e in (error, error.__cause__):
        name = getattr(e, "sqlite_errorname", None)
        if name:
            return name
    return None


def classify(errorname, waited_s, timeout_s):
    if errorname == "SQLITE_BUSY_SNAPSHOT":
        return "busy_snapshot"
    if errorname == "SQLITE_BUSY":
        return "busy_upgrade" if waited_s < timeout_s / 2 else "busy_timeout"
    if errorname and errorname.startswith("SQLITE_LOCKED"):
        return "locked"
    return "other"


class Probe:
    def __init__(self, timeout_s):
        self.timeout_s = timeout_s
        self.failures = []
        self.begins = Counter()
        self.last = ("?", 0.0)
        self.slowest_ok = 0.0

    def install(self):
        connection.ensure_connection()
        connection.execute_wrappers.append(self._time_statement)

    def _time_statement(self, execute, sql, params, many, context):
        verb = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else "?"
        if verb == "BEGIN":
            self.begins[" ".join(sql.split()).upper()] += 1
        started = time.perf_counter()
        try:
            result = execute(sql, params, many, context)
        finally:
            self.last = (verb, time.perf_counter() - started)
        self.slowest_ok = max(self.slowest_ok, self.last[1])
        return result

    @contextmanager
    def txn(self):
        """transaction.atomic(), with the COMMIT timed."""
        block = transaction.atomic()
        block.__enter__()
        try:
            yield
        except BaseException:
            block.__exit__(*sys.exc_info())
            raise
        started = time.perf_counter()
        try:
            block.__exit__(None, None, None)
        finally:
            self.last = ("COMMIT", time.perf_counter() - started)
        self.slowest_ok = max(self.slowest_ok, self.last[1])

    def record(self, error, step):
        verb, waited = self.last
        name = sqlite_errorname(error)
        self.failures.append(
            {
                "class": classify(name, waited, self.timeout_s),
                "errorname": name,
                "message": str(error),
                "verb": verb,
                "step": step,
                "waited_ms": round(waited * 1000, 3),
                "at": time.time(),
            }
        )
