"""`manage.py webload N`: N requests to the claim view, through Django's test
client (the whole middleware stack, no server). Prints one JSON line: the
process's own tally of the failures its view answered with 503."""

import json
import os
import time

from django.core.management.base import BaseCommand
from django.db import connection
from django.test import Client


class Command(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument("requests", type=int)
        parser.add_argument("--start-at", type=float, default=0.0)

    def handle(self, requests, start_at, **options):
        connection.ensure_connection()
        client = Client()
        time.sleep(max(0.0, start_at - time.time()))
        started = time.time()
        ok, failures = 0, []
        for _ in range(requests):
            response = client.post("/claim/")
            if response.status_code == 200:
                ok += 1
            else:
                failures.append(response.json()["failure"])
        out = {"pid": os.getpid(), "ok": ok, "failures": failures, "started": started, "ended": time.time()}
        self.stdout.write(json.dumps(out))
