import importlib
import os

from django.apps import AppConfig


class AdviceAppConfig(AppConfig):
    name = "adviceapp"
    default_auto_field = "django.db.models.AutoField"

    def ready(self):
        # Modules pasted from advice/ that must be imported at startup (the
        # connection_created handler of advice/django-4.2/wal.py).
        for module in filter(None, os.environ.get("ADVICE_IMPORT", "").split(",")):
            importlib.import_module(module)
