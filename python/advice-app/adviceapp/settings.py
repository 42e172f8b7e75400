"""Settings of the minimal app, driven by the environment that
scripts/test-advice sets for each run.

ADVICE_DB       the SQLite file
ADVICE_TIMEOUT  OPTIONS["timeout"] in seconds (short, so a run takes seconds)
ADVICE_MODE     "before": Django's defaults (ENGINE sqlite3, OPTIONS timeout
                only: a deferred BEGIN, the file's own journal mode);
                "after": DATABASES taken from the pasted settings snippet
ADVICE_SETTINGS the pasted snippet file (a copy of advice/.../settings*.py)
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "advice-app-not-secret"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["adviceapp"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

DB = os.environ["ADVICE_DB"]
TIMEOUT = float(os.environ.get("ADVICE_TIMEOUT", "1"))

if os.environ.get("ADVICE_MODE", "before") == "after":
    # What a user does: paste the snippet into settings.py. Only the file name
    # and the timeout differ from the snippet as shipped.
    snippet = {"BASE_DIR": BASE_DIR}
    with open(os.environ["ADVICE_SETTINGS"]) as f:
        exec(compile(f.read(), os.environ["ADVICE_SETTINGS"], "exec"), snippet)
    DATABASES = snippet["DATABASES"]
    DATABASES["default"]["NAME"] = DB
    DATABASES["default"]["OPTIONS"]["timeout"] = TIMEOUT
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DB,
            "OPTIONS": {"timeout": TIMEOUT},
        }
    }
