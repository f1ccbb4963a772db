from cookieproj.pages import views
from django.conf import settings
from django.contrib import admin
from django.urls import path

urlpatterns = [
    path("", views.home, name="home"),
    path("uploads/", views.upload, name="upload"),
    path(settings.ADMIN_URL, admin.site.urls),
]
