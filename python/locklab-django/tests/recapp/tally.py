"""What a process saw, measured by the app itself at the call site (not by the
recorder): the failing ORM call's step, its duration, and sqlite3's error name
and code."""

import time


def sqlite_error(error):
    for e in (error, error.__cause__):
        if getattr(e, "sqlite_errorname", None):
            return e.sqlite_errorname, e.sqlite_errorcode
    return None, None


class Timer:
    """Remembers the step in progress and when it began; `failed()` turns an
    OperationalError into a record of that step."""

    def __init__(self):
        self.step = None
        self.started = 0.0

    def at(self, step):
        self.step = step
        self.started = time.perf_counter()

    def failed(self, error):
        name, code = sqlite_error(error)
        return {
            "step": self.step,
            "waited_ms": round((time.perf_counter() - self.started) * 1000, 3),
            "errorname": name,
            "code": code,
            "message": str(error),
        }
