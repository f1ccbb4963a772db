import re

import pytest
from django.core.cache import cache

from guestbook.models import Job, Note
from guestbook.views import VISITS_KEY


@pytest.fixture(autouse=True)
def fresh_visit_counter():
    cache.delete(VISITS_KEY)


@pytest.mark.django_db
def test_home_renders_notes_and_the_hashed_stylesheet(client, collected_static):
    Note.objects.create(text="first note")
    response = client.get("/", secure=True)
    assert response.status_code == 200
    html = response.content.decode()
    assert "first note" in html
    stylesheet = re.search(r'href="/static/(guestbook/style\.[0-9a-f]{12}\.css)"', html)
    assert stylesheet, "the page must link the content-hashed CSS file"
    assert (collected_static / stylesheet.group(1)).is_file()


@pytest.mark.django_db
def test_home_counts_visits_in_the_cache(client):
    client.get("/", secure=True)
    response = client.get("/", secure=True)
    assert "Visit 2" in response.content.decode()
    assert cache.get(VISITS_KEY) == 2


@pytest.mark.django_db
def test_posting_a_note_saves_it(client):
    response = client.post("/", {"text": "hello from a test"}, secure=True)
    assert response.status_code == 302
    assert Note.objects.filter(text="hello from a test").exists()


@pytest.mark.django_db
def test_an_empty_note_is_refused(client):
    response = client.post("/", {"text": ""}, secure=True)
    assert response.status_code == 400
    assert not Note.objects.exists()


@pytest.mark.django_db
def test_home_refuses_other_methods(client):
    assert client.delete("/", secure=True).status_code == 405


@pytest.mark.django_db
def test_job_status_of_an_unknown_job_is_404(client):
    assert client.get("/jobs/999999/", secure=True).status_code == 404


@pytest.mark.django_db
def test_job_status_reports_a_queued_job(client):
    job = Job.objects.create(payload="later")
    response = client.get(f"/jobs/{job.pk}/", secure=True)
    assert response.json() == {"id": job.pk, "status": "queued", "result": "", "runs": 0}
