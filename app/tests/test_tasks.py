"""Tasks, run directly and by a real Celery worker and beat on the real broker."""

from datetime import timedelta

import pytest
from django.utils import timezone

from guestbook.models import Heartbeat, Job
from guestbook.tasks import heartbeat, process_job

from .conftest import wait_for


@pytest.mark.django_db
def test_a_job_is_done_once_even_if_delivered_twice():
    job = Job.objects.create(payload="twice")
    assert process_job(job.pk) == "TWICE"
    assert process_job(job.pk) == "TWICE"
    job.refresh_from_db()
    assert job.status == Job.Status.DONE and job.runs == 1 and job.finished_at is not None


@pytest.mark.django_db
def test_heartbeat_records_a_row_and_prunes_old_ones():
    old = Heartbeat.objects.create(worker="old")
    Heartbeat.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=2))
    assert heartbeat() == 1
    assert not Heartbeat.objects.filter(pk=old.pk).exists()


def test_a_queued_job_is_done_by_the_worker(client, celery_worker_and_beat):
    response = client.post("/jobs/", {"payload": "from the view"}, secure=True)
    assert response.status_code == 202
    job_id = response.json()["id"]
    done = wait_for(lambda: Job.objects.filter(pk=job_id, status=Job.Status.DONE).first(), timeout=30)
    assert done, "the worker did not finish the job within 30 s"
    assert done.result == "FROM THE VIEW" and done.runs == 1
    assert client.get(f"/jobs/{job_id}/", secure=True).json()["status"] == "done"


def test_beat_schedules_heartbeats_that_the_worker_records(celery_worker_and_beat):
    assert wait_for(lambda: Heartbeat.objects.count() >= 2, timeout=30), "no heartbeats within 30 s"
