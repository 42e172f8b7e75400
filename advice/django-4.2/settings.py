# Django 4.2: SQLite settings for several processes on one file.
#
# What it changes:
# - ENGINE points at the backend in backend/ (copied into your project as the
#   package sqlite_immediate; use its dotted path if it lives inside another
#   package, such as "myproject.sqlite_immediate"). Its atomic() blocks begin
#   IMMEDIATE: they wait for the write lock instead of failing with
#   busy_upgrade or busy_snapshot.
# - "timeout" (seconds) is how long a statement waits for another connection's
#   lock before "database is locked" (busy_timeout). Python's default is 5.
# - Django 4.2 passes OPTIONS straight to sqlite3.connect(): "transaction_mode"
#   and "init_command" are not accepted here (a TypeError at the first query).
#   WAL and synchronous come from the connection_created handler in wal.py.
#
# What it costs: see backend/base.py (IMMEDIATE serialises atomic() blocks)
# and wal.py (synchronous=NORMAL trades durability on power loss).

DATABASES = {
    "default": {
        "ENGINE": "sqlite_immediate",
        "NAME": BASE_DIR / "db.sqlite3",
        "OPTIONS": {"timeout": 20},
    }
}
