"""Ops pages (the dashboard), mounted at /ops/."""

from django.urls import path

from synclog import views

app_name = "synclog"

urlpatterns = [
    path("dashboard/", views.dashboard, name="dashboard"),
    path("dashboard/sync/<str:code>/", views.sync_now, name="sync-now"),
    path("dashboard/cancel/<uuid:log_id>/", views.cancel, name="cancel"),
]
