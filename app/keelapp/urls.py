from django.contrib import admin
from django.urls import path

from guestbook import health, views

urlpatterns = [
    path("", views.home, name="home"),
    path("jobs/", views.enqueue_job, name="enqueue-job"),
    path("jobs/<int:job_id>/", views.job_status, name="job-status"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("version", health.version, name="version"),
    path("admin/", admin.site.urls),
]
