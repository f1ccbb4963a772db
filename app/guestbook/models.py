from django.db import models


class Note(models.Model):
    """A message a visitor leaves on the home page."""

    text = models.CharField(max_length=280)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.text[:40]


class Job(models.Model):
    """A unit of background work, queued by a view and done by a Celery worker."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        DONE = "done"

    payload = models.CharField(max_length=200)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    result = models.CharField(max_length=200, blank=True)
    runs = models.PositiveIntegerField(default=0, help_text="How many times a worker completed it.")
    worker = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"job {self.pk} ({self.status})"


class Heartbeat(models.Model):
    """A row written by the beat-scheduled heartbeat task: proof that beat and a worker run."""

    worker = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
