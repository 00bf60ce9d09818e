"""URL configuration: wiring only."""

from django.contrib import admin
from django.urls import include, path

from ops import views as ops_views

urlpatterns = [
    # Probes and metrics for orchestrators and Prometheus (no login; /metrics takes a bearer token).
    path("healthz", ops_views.healthz, name="healthz"),
    path("readyz", ops_views.readyz, name="readyz"),
    path("metrics", ops_views.metrics, name="metrics"),
    path("api/", include("pfasync.api_urls")),
    path("ops/", include("synclog.urls")),
    path("admin/", admin.site.urls),
]
