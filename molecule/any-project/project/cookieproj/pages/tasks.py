from celery import shared_task
from django.core.files.storage import default_storage


@shared_task
def count_uploads():
    return len(default_storage.listdir("uploads")[1]) if default_storage.exists("uploads") else 0
