"""REST API routes, mounted at /api/: wiring only."""

from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView

from mirror import api as mirror_api
from mirror import records_api
from pfasync import api, auth
from synclog import api as synclog_api

urlpatterns = [
    path("auth/login", auth.LoginApi.as_view(), name="api-login"),
    path("auth/refresh", auth.TokenRefreshApi.as_view(), name="api-refresh"),
    path("auth/logout", auth.LogoutApi.as_view(), name="api-logout"),
    path("auth/me", auth.MeApi.as_view(), name="api-me"),
    path("sync/trigger", synclog_api.SyncTriggerApi.as_view(), name="api-sync-trigger"),
    path("sync/status", synclog_api.SyncStatusListApi.as_view(), name="api-sync-status"),
    path("sync/status/<uuid:key>", synclog_api.SyncStatusDetailApi.as_view(), name="api-sync-status-detail"),
    path("sync/cancel/<uuid:log_id>", synclog_api.SyncCancelApi.as_view(), name="api-sync-cancel"),
    path("sync/worker-status", synclog_api.WorkerStatusApi.as_view(), name="api-worker-status"),
    path("organizations", synclog_api.OrganizationListApi.as_view(), name="api-organizations"),
    path("organizations/<str:key>", mirror_api.OrganizationDetailApi.as_view(), name="api-organization"),
    path(
        "organizations/<str:key>/connection", mirror_api.ReadConnectionApi.as_view(), name="api-organization-connection"
    ),
    path("organizations/<str:key>/records", records_api.RecordListApi.as_view(), name="api-records"),
    path("organizations/<str:key>/records/<str:pfa_id>", records_api.RecordDetailApi.as_view(), name="api-record"),
    path(
        "organizations/<str:key>/records/<str:pfa_id>/draft",
        records_api.DraftDiscardApi.as_view(),
        name="api-record-draft",
    ),
    path("organizations/<str:key>/drafts/commit", records_api.DraftsCommitApi.as_view(), name="api-drafts-commit"),
    path("organizations/<str:key>/drafts/discard", records_api.DraftsDiscardApi.as_view(), name="api-drafts-discard"),
    path("organizations/<str:key>/kpis", records_api.KpisApi.as_view(), name="api-kpis"),
    path("organizations/<str:key>/conflicts", records_api.ConflictListApi.as_view(), name="api-conflicts"),
    path(
        "modifications/<int:modification_id>/resolve",
        records_api.ModificationResolveApi.as_view(),
        name="api-modification-resolve",
    ),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", api.ApiDocsView.as_view(url_name="api-schema"), name="api-docs"),
    re_path(r"^", api.NotFoundApi.as_view()),
]
