# Django 4.2 (works on any version): WAL and synchronous=NORMAL on every new
# SQLite connection, from the connection_created signal.
# Import this module once at startup, for example from your AppConfig.ready().
#
# What it changes:
# - journal_mode=WAL is stored in the database file: once one connection has
#   switched it, it stays. Readers no longer block a writer's COMMIT, and a
#   writer no longer blocks readers.
# - Deploy it with `python manage.py migrate` before the other processes start:
#   that first connection switches the file, and on every later connection the
#   pragma is a no-op. The switch cannot wait for a writer: if another process
#   is writing to the file in rollback mode at that moment, the connection
#   fails at once with "database is locked", whatever the timeout (and waits
#   the whole timeout behind a reader).
# - synchronous=NORMAL is per connection: a WAL commit no longer waits for an
#   fsync; the WAL is synced at checkpoints.
#
# What it costs:
# - synchronous=NORMAL in WAL: a commit survives a crash of the process, but a
#   power loss or OS crash can lose the last transactions (the file is never
#   corrupted). Leave out that line to keep full durability.
# - WAL alone does not cure busy_upgrade, and it adds busy_snapshot: a deferred
#   block that read before another process committed cannot write. Use it with
#   IMMEDIATE transactions (backend/).
# - WAL needs a local file system (no NFS) and adds -wal and -shm files beside
#   the database; every process must be able to write them.

from django.db.backends.signals import connection_created
from django.dispatch import receiver


@receiver(connection_created)
def sqlite_wal(sender, connection, **kwargs):
    if connection.vendor != "sqlite":
        return
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
