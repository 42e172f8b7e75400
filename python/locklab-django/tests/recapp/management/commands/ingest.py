"""`manage.py ingest N`: N event writes, each its own autocommit insert, and
every 30th write in an atomic() block that stays open for 0.5 s (longer than
the timeout) after its insert, as an ingester holding a transaction across
real time. Prints one JSON line: the process's own tally."""

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
                if seq % 30 == 15:
                    with transaction.atomic():
                        t.at("insert")
                        Event.objects.create(seq=seq, text="held")
                        held_from = time.time()
                        time.sleep(hold)
                        t.at("commit")
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
