"""`manage.py ingest N`: N event writes, each its own autocommit insert, except
every 30th, whose transaction stays open for 0.5 s (longer than the timeout)
after its insert, as an ingester holding a transaction across real time:
alternately an atomic() block, and a manual-mode transaction
(set_autocommit(False), then set_autocommit(True) commits: Toaster's sync).
Prints one JSON line: the process's own tally."""

import json
import os
import time

from django.core.management.base import BaseCommand
from django.db import OperationalError, connection, transaction

from recapp.models import Event
from recapp.tally import Timer


class Command(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument("events", type=int)
        parser.add_argument("--start-at", type=float, default=0.0)
        parser.add_argument("--hold", type=float, default=0.5)

    def handle(self, events, start_at, hold, **options):
        connection.ensure_connection()
        time.sleep(max(0.0, start_at - time.time()))
        started = time.time()
        ok, failures, holds = 0, [], []
        t = Timer()
        for seq in range(events):
            try:
                if seq % 60 == 15:
                    with transaction.atomic():
                        t.at("insert")
                        Event.objects.create(seq=seq, text="held")
                        held_from = time.time()
                        time.sleep(hold)
                        t.at("commit")
                    holds.append((held_from, time.time()))
                elif seq % 60 == 45:
                    # manual mode, as Toaster's buildinfohelper: the insert opens
                    # sqlite3's implicit transaction, set_autocommit(True) commits
                    transaction.set_autocommit(False)
                    try:
                        t.at("insert")
                        Event.objects.create(seq=seq, text="held, manual")
                        held_from = time.time()
                        time.sleep(hold)
                        t.at("commit")
                        transaction.set_autocommit(True)
                    except BaseException:
                        transaction.rollback()
                        transaction.set_autocommit(True)
                        raise
                    holds.append((held_from, time.time()))
                else:
                    t.at("insert")
                    Event.objects.create(seq=seq, text="event")
                    time.sleep(0.002)
                ok += 1
            except OperationalError as error:
                failures.append(t.failed(error))
        out = {"pid": os.getpid(), "ok": ok, "failures": failures, "holds": holds,
               "started": started, "ended": time.time()}
        self.stdout.write(json.dumps(out))
