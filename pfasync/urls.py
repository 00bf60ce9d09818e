"""URL configuration: the admin now; the REST API and dashboard mount here too."""

from django.contrib import admin
from django.urls import path

urlpatterns = [
    path("admin/", admin.site.urls),
]
