# Django 4.2: the SQLite backend, with every atomic() block beginning IMMEDIATE.
#
# What it changes: Django 4.2 opens each outermost atomic() block (yours,
# ATOMIC_REQUESTS, update_or_create, bulk_create, delete with cascades) with a
# plain BEGIN, which is DEFERRED: the block takes the write lock only at its
# first write. If it has read before, and another connection holds or wants the
# write lock, SQLite refuses at once with "database is locked" (busy_upgrade),
# or with SQLITE_BUSY_SNAPSHOT under WAL (busy_snapshot), whatever the timeout.
# BEGIN IMMEDIATE takes the write lock first, waiting up to OPTIONS "timeout",
# so the block waits its turn instead of failing.
#
# What it costs: every atomic() block, read-only ones included, now holds the
# write lock for its whole length: blocks run one at a time across processes.
# Keep slow work and pure reads outside atomic().
#
# Scope: this is the method Django 4.2 calls to open an atomic() block in
# autocommit mode (Django's default). Code that calls set_autocommit(False)
# gets SQLite's implicit deferred BEGIN, which this does not change.
# On Django 5.1 and later, drop this backend and set
# OPTIONS["transaction_mode"] = "IMMEDIATE" instead.

from django.db.backends.sqlite3 import base


class DatabaseWrapper(base.DatabaseWrapper):
    def _start_transaction_under_autocommit(self):
        self.cursor().execute("BEGIN IMMEDIATE")
