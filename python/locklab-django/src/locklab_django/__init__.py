"""locklab_django: records every SQLite "database is locked" raised through
Django's connections, in locklab's trace format (one JSON object per line).

Add "locklab_django" to INSTALLED_APPS and set LOCKLAB_TRACE_DIR; see README.md.
"""

__version__ = "0.1.0"
