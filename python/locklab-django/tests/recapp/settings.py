"""A small Django app with the recorder installed, as a user would install it.
RECAPP_DB is the SQLite file, RECAPP_TIMEOUT its OPTIONS["timeout"]."""

import os

SECRET_KEY = "recapp-not-secret"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["testserver"]
ROOT_URLCONF = "recapp.urls"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = ["locklab_django", "recapp"]
MIDDLEWARE = ["locklab_django.middleware.LockTraceMiddleware"]
LOCKLAB_TRACE_DIR = os.environ["RECAPP_TRACE_DIR"]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["RECAPP_DB"],
        "OPTIONS": {"timeout": float(os.environ.get("RECAPP_TIMEOUT", "0.3"))},
    }
}
