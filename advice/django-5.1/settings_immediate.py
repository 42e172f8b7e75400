# Django 5.1, 5.2 and later: SQLite settings for several processes on one file.
#
# What it changes:
# - transaction_mode "IMMEDIATE": every atomic() block takes the write lock at
#   BEGIN, waiting up to "timeout" for it: your own blocks, ATOMIC_REQUESTS, and
#   the ones Django opens itself (update_or_create, bulk_create, delete with
#   cascades). A block that reads and then writes can no longer fail at once
#   with "database is locked" (busy_upgrade), nor, under WAL, with
#   SQLITE_BUSY_SNAPSHOT (busy_snapshot).
# - "timeout" (seconds) is how long a statement waits for another connection's
#   lock before "database is locked" (busy_timeout). Python's default is 5.
# - init_command runs on every new connection. Django 5.1+ splits it on ";" and
#   runs each statement, so both pragmas below are applied. journal_mode=WAL is
#   stored in the file (readers no longer block the writer, nor it them);
#   synchronous=NORMAL is per connection and is the cost below.
# - Deploy it with `python manage.py migrate` before the other processes start:
#   that first connection switches the file to WAL, and on every later
#   connection the pragma is a no-op. The switch cannot wait for a writer: if
#   another process is writing to the file in rollback mode at that moment,
#   the connection fails at once with "database is locked", whatever the
#   timeout (and waits the whole timeout behind a reader).
#
# What it costs:
# - IMMEDIATE serialises every atomic() block, read-only ones included: an
#   atomic() that only reads still waits for, and blocks, other writers. Keep
#   reads that need no write outside atomic().
# - synchronous=NORMAL in WAL: a commit survives a crash of the process, but a
#   power loss or OS crash can lose the last transactions (never corrupts the
#   file). Drop that pragma to keep full durability.
# - WAL needs a local file system (no NFS) and adds -wal and -shm files beside
#   the database; every process must be able to write them.
# - transaction_mode covers atomic() in autocommit mode (Django's default). Code
#   that calls set_autocommit(False) gets SQLite's implicit deferred BEGIN.

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / "db.sqlite3",
        "OPTIONS": {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
        },
    }
}
