"""A Toaster-shaped pair: build requests with a state, environments with a
lock, plus the project a request belongs to and the events a build writes.
The constant names follow Toaster's, so that advice/django/guarded_claim.py
runs here unchanged."""

from django.db import models


class Project(models.Model):
    name = models.CharField(max_length=100, unique=True)


class BuildEnvironment(models.Model):
    LOCK_FREE = 0
    LOCK_LOCK = 1
    LOCK_RUNNING = 2

    name = models.CharField(max_length=100)
    lock = models.IntegerField(default=LOCK_FREE)


class BuildRequest(models.Model):
    REQ_QUEUED = 1
    REQ_INPROGRESS = 2
    REQ_COMPLETED = 3

    project = models.ForeignKey(Project, on_delete=models.CASCADE)
    state = models.IntegerField(default=REQ_QUEUED)
    environment = models.ForeignKey(
        BuildEnvironment, null=True, on_delete=models.SET_NULL
    )


class Event(models.Model):
    seq = models.IntegerField()
    payload = models.CharField(max_length=200)
