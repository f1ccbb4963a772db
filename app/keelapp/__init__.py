"""The Keel reference app: a Django project that uses everything Keel deploys."""

from .celery import app as celery_app

__all__ = ("celery_app",)
