from django.apps import AppConfig
from django.core import checks


class LocklabConfig(AppConfig):
    name = "locklab_django"
    verbose_name = "locklab lock recorder"

    def ready(self):
        from . import recorder

        recorder.configure()
        checks.register(recorder.check_settings)
