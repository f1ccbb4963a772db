from django.contrib import admin

from guestbook.models import Heartbeat, Job, Note


@admin.register(Note)
class NoteAdmin(admin.ModelAdmin):
    list_display = ("text", "created_at")
    search_fields = ("text",)


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "payload", "status", "runs", "worker", "created_at", "finished_at")
    list_filter = ("status",)


@admin.register(Heartbeat)
class HeartbeatAdmin(admin.ModelAdmin):
    list_display = ("worker", "created_at")
