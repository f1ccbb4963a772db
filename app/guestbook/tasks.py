import socket
from datetime import timedelta

from celery import shared_task
from django.db import transaction
from django.utils import timezone

from guestbook.models import Heartbeat, Job

HEARTBEAT_RETENTION = timedelta(days=1)


@shared_task
def process_job(job_id: int) -> str:
    """Do a job once: a redelivered message finds it done and changes nothing."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_id)
        if job.status == Job.Status.DONE:
            return job.result
        job.result = job.payload.upper()
        job.status = Job.Status.DONE
        job.runs += 1
        job.worker = socket.gethostname()
        job.finished_at = timezone.now()
        job.save()
    return job.result


@shared_task
def heartbeat() -> int:
    """Record that beat scheduled and a worker ran this; keep a day of rows."""
    Heartbeat.objects.create(worker=socket.gethostname())
    Heartbeat.objects.filter(created_at__lt=timezone.now() - HEARTBEAT_RETENTION).delete()
    return Heartbeat.objects.count()
