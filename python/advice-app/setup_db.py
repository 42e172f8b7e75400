"""Creates the minimal app's tables and seeds them:
`python setup_db.py QUEUED ENVIRONMENTS JOURNAL_MODE`.

One project, ENVIRONMENTS free environments and QUEUED queued requests, so the
scheduler always has work. JOURNAL_MODE (delete or wal) is set on the file here,
with Python's sqlite3, for the "before" runs; the "after" runs leave the file
as created (delete) and the snippet must switch it.
"""

import os
import sqlite3
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "adviceapp.settings")
django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from adviceapp.models import BuildEnvironment, BuildRequest, Project  # noqa: E402


def main():
    queued, environments, journal_mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    call_command("migrate", run_syncdb=True, verbosity=0)
    project = Project.objects.create(name="lab")
    BuildEnvironment.objects.bulk_create(
        BuildEnvironment(name="qemux86-%d" % i) for i in range(environments)
    )
    BuildRequest.objects.bulk_create(
        BuildRequest(project=project, state=BuildRequest.REQ_QUEUED) for _ in range(queued)
    )
    connection.close()
    if journal_mode != "keep":
        db = sqlite3.connect(settings.DATABASES["default"]["NAME"])
        got = db.execute("PRAGMA journal_mode=%s" % journal_mode).fetchone()[0]
        db.close()
        if got != journal_mode:
            sys.exit("setup_db: journal_mode is %s, not %s" % (got, journal_mode))


if __name__ == "__main__":
    main()
