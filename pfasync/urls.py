"""URL configuration: wiring only."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("ops/", include("synclog.urls")),
    path("admin/", admin.site.urls),
]
