from django import forms
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from guestbook.models import Heartbeat, Job, Note
from guestbook.tasks import process_job

VISITS_KEY = "guestbook:visits"
RECENT_NOTES = 20


class NoteForm(forms.ModelForm):
    class Meta:
        model = Note
        fields = ["text"]


def count_visit() -> int:
    """Count a visit in the cache; the first visit after an eviction starts at 1."""
    if cache.add(VISITS_KEY, 1, timeout=None):
        return 1
    try:
        return cache.incr(VISITS_KEY)
    except ValueError:  # evicted between add and incr
        cache.add(VISITS_KEY, 1, timeout=None)
        return 1


@require_http_methods(["GET", "POST"])
def home(request):
    """The guestbook: reads and writes the database, counts visits in the cache."""
    form = NoteForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        form.save()
        return redirect("home")
    context = {
        "form": form,
        "notes": Note.objects.all()[:RECENT_NOTES],
        "visits": count_visit(),
        "last_heartbeat": Heartbeat.objects.first(),
        "release": settings.RELEASE["release"],
    }
    return render(request, "guestbook/home.html", context, status=400 if form.errors else 200)


@require_POST
def enqueue_job(request):
    """Create a job and queue it once the transaction that created it commits."""
    payload = request.POST.get("payload", "").strip()[:200] or "hello"
    with transaction.atomic():
        job = Job.objects.create(payload=payload)
        transaction.on_commit(lambda: process_job.delay(job.pk))
    return JsonResponse({"id": job.pk, "status": job.status}, status=202)


@require_GET
def job_status(request, job_id: int):
    job = get_object_or_404(Job, pk=job_id)
    return JsonResponse({"id": job.pk, "status": job.status, "result": job.result, "runs": job.runs})
