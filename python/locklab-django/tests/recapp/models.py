from django.db import models


class Environment(models.Model):
    FREE = 0
    LOCKED = 1

    name = models.CharField(max_length=50)
    lock = models.IntegerField(default=FREE)


class Hit(models.Model):
    path = models.CharField(max_length=100)


class Event(models.Model):
    seq = models.IntegerField()
    text = models.CharField(max_length=100)
