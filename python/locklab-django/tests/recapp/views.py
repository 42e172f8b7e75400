import time

from django.db import OperationalError, transaction
from django.http import JsonResponse

from .models import Environment, Hit
from .tally import Timer


def claim(request):
    """A view that logs the hit (one autocommit insert), then, in one atomic()
    block, reads the first free environment and saves it locked, then free
    again: the read-then-write of Toaster's scheduler, in a view."""
    t = Timer()
    try:
        t.at("hit")
        Hit.objects.create(path=request.path)
        with transaction.atomic():
            t.at("read")
            env = Environment.objects.filter(lock=Environment.FREE).order_by("pk").first()
            time.sleep(0.003)  # the view's own work between its read and its write
            t.at("lock")
            env.lock = Environment.LOCKED
            env.save(update_fields=["lock"])
            env.lock = Environment.FREE
            env.save(update_fields=["lock"])
            t.at("commit")
    except OperationalError as error:
        return JsonResponse({"error": "database is locked", "failure": t.failed(error)}, status=503)
    return JsonResponse({"ok": True})
