"""The Celery app: `celery -A keelapp worker` and `celery -A keelapp beat`."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "keelapp.settings")

app = Celery("keelapp")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
