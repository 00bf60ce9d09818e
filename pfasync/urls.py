"""URL configuration: wiring only."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("api/", include("pfasync.api_urls")),
    path("ops/", include("synclog.urls")),
    path("admin/", admin.site.urls),
]
