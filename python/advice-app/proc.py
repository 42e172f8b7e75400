"""One process of the minimal app: `python proc.py ROLE ITERATIONS OUT START_AT`.

ROLE is one of
- view:      an ATOMIC_REQUESTS-style view: in one atomic() block it reads (the
             project, the queue length), does its own work, then creates a
             build request;
- scheduler: Toaster's runbuilds schedule(): read the first queued request in
             one atomic() block, save it in progress, then in another block read
             the first free environment and save it locked; then the build
             "runs" and both are released. With ADVICE_CLAIM=guarded it
             claims with advice/django/guarded_claim.py instead;
- writer:    short writes, each its own statement (an ingester writing events).

It runs ITERATIONS iterations (not seconds), starting at the wall-clock time
START_AT so that the three processes overlap, and writes what it saw to OUT as
JSON. ADVICE_WORK_MS (default 3) is the app's own time between a block's read
and its write: ORM objects, validation, rendering.
"""

import json
import os
import sys
import time

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "adviceapp.settings")
django.setup()

from django.db import OperationalError, connection  # noqa: E402

from adviceapp.models import BuildEnvironment, BuildRequest, Event, Project  # noqa: E402
from adviceapp.probe import Probe  # noqa: E402

WORK_S = float(os.environ.get("ADVICE_WORK_MS", "3")) / 1000
GUARDED = os.environ.get("ADVICE_CLAIM", "toaster") == "guarded"


def work():
    time.sleep(WORK_S)


def view(probe, i):
    with probe.txn():
        project = Project.objects.get(name="lab")
        BuildRequest.objects.filter(state=BuildRequest.REQ_QUEUED).count()
        work()
        BuildRequest.objects.create(project=project, state=BuildRequest.REQ_QUEUED)


def schedule_toaster(probe):
    """Toaster's claim, step by step (toaster-facts.md): a read-only block, a
    save, a read-then-save block, a save."""
    with probe.txn():
        request = (
            BuildRequest.objects.filter(state=BuildRequest.REQ_QUEUED)
            .order_by("pk")
            .first()
        )
    if request is None:
        return
    request.state = BuildRequest.REQ_INPROGRESS
    request.save()
    with probe.txn():
        env = (
            BuildEnvironment.objects.filter(lock=BuildEnvironment.LOCK_FREE)
            .order_by("pk")
            .first()
        )
        work()
        if env is not None:
            env.lock = BuildEnvironment.LOCK_LOCK
            env.save()
    if env is None:
        request.state = BuildRequest.REQ_QUEUED
        request.save()
        return
    request.environment = env
    request.save()
    # the build runs, then both are released
    env.lock = BuildEnvironment.LOCK_FREE
    env.save()
    request.state = BuildRequest.REQ_COMPLETED
    request.save()


def schedule_guarded(probe):
    from adviceapp.guarded_claim import claim_next_request, lock_free_environment

    request_pk = claim_next_request()
    if request_pk is None:
        return
    work()
    env_pk = lock_free_environment(request_pk)
    if env_pk is None:
        return
    BuildEnvironment.objects.filter(pk=env_pk).update(lock=BuildEnvironment.LOCK_FREE)
    BuildRequest.objects.filter(pk=request_pk).update(state=BuildRequest.REQ_COMPLETED)


def scheduler(probe, i):
    if GUARDED:
        schedule_guarded(probe)
    else:
        schedule_toaster(probe)


def writer(probe, i):
    Event.objects.create(seq=i, payload="task %d succeeded" % i)
    time.sleep(0.001)


ROLES = {"view": view, "scheduler": scheduler, "writer": writer}


def main():
    role, iterations, out, start_at = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    step = ROLES[role]
    probe = Probe(float(connection.settings_dict["OPTIONS"].get("timeout", 5.0)))
    probe.install()
    time.sleep(max(0.0, start_at - time.time()))
    started = time.time()
    ok = 0
    for i in range(iterations):
        try:
            step(probe, i)
            ok += 1
        except OperationalError as error:
            probe.record(error, role)
    ended = time.time()
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        journal_mode = cursor.fetchone()[0]
        cursor.execute("PRAGMA synchronous")
        synchronous = cursor.fetchone()[0]
    with open(out, "w") as f:
        json.dump(
            {
                "role": role,
                "pid": os.getpid(),
                "iterations": iterations,
                "ok": ok,
                "failures": probe.failures,
                "begins": dict(probe.begins),
                "slowest_ok_ms": round(probe.slowest_ok * 1000, 3),
                "journal_mode": journal_mode,
                "synchronous": synchronous,
                "started": started,
                "ended": ended,
            },
            f,
        )


if __name__ == "__main__":
    main()
