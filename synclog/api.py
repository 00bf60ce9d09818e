"""REST API of sync runs: trigger, follow and cancel syncs, the worker's status, and the organizations
with their last run.

Views are thin: validate with an input serializer, call one function (`sync_start`, `sync_cancel`,
`worker_status` or a selector), shape the output. Who may act is asked of `synclog.permissions`, as the
admin and the dashboard ask it. Errors take the project's one shape (`pfasync.api`).
"""

import uuid

from django.db import transaction
from django.db.models import Count, Q, QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from mirror import api as mirror_api
from mirror.api import visible_organization_or_404
from mirror.models import Organization
from mirror.selectors import mirror_size_subquery, organizations_visible_to
from pfasync.api import ApiError, ApiView, InputSerializer, error_responses
from synclog.models import PfaSyncLog, PfaSyncRecordError, RunEnded, SyncStatus
from synclog.permissions import can_allow_mass_delete, can_cancel_sync, can_sync_every_organization, can_trigger_sync
from synclog.runs import (
    SyncNotConfigured,
    SyncNothingToWrite,
    SyncNotQueued,
    SyncRefused,
    sync_cancel,
    sync_start,
)
from synclog.selectors import (
    last_sync_of,
    organizations_to_sync,
    organizations_with_edits_waiting,
    organizations_with_last_run,
    sync_logs_visible_to,
)
from synclog.worker import queued_runs_warning, worker_status

RECORDS_KEPT_ASIDE_SHOWN = 50
# The trigger's organizationId asking for every organization: asked for explicitly, never by leaving it out.
EVERY_ORGANIZATION = "*"


# --- Sync runs ------------------------------------------------------------------------------------


class SyncLogOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    batchId = serializers.UUIDField(source="batch_id")
    organizationId = serializers.UUIDField(source="organization_id")
    organizationCode = serializers.CharField(source="organization.code")
    organizationName = serializers.CharField(source="organization.name")
    syncType = serializers.CharField(
        source="sync_type", required=False, help_text="`full` or `incremental`; reads only (absent on a write run)."
    )
    direction = serializers.ChoiceField(choices=PfaSyncLog.Direction.choices)
    status = serializers.ChoiceField(choices=SyncStatus.choices)
    trigger = serializers.CharField()
    triggeredBy = serializers.CharField(
        source="triggered_by_name",
        help_text="The username, or the command (`sync_pems`, `push_pems`), or `system` for the schedule.",
    )
    recordsTotal = serializers.IntegerField(source="records_total", allow_null=True)
    recordsProcessed = serializers.IntegerField(source="records_processed")
    recordsInserted = serializers.IntegerField(source="records_inserted")
    recordsUpdated = serializers.IntegerField(source="records_updated")
    recordsUnchanged = serializers.IntegerField(source="records_unchanged")
    recordsDeleted = serializers.IntegerField(source="records_deleted")
    recordsErrored = serializers.IntegerField(source="records_errored")
    recordsWritten = serializers.IntegerField(source="records_written", help_text="Write runs: edits PEMS took.")
    recordsRebased = serializers.IntegerField(
        source="records_rebased", help_text="Write runs: of those, written after a merge with PEMS's own change."
    )
    recordsConflicts = serializers.IntegerField(source="records_conflicts", help_text="Write runs: edits in conflict.")
    createdAt = serializers.DateTimeField(source="created_at")
    startedAt = serializers.DateTimeField(source="started_at", allow_null=True)
    completedAt = serializers.DateTimeField(source="completed_at", allow_null=True)
    heartbeatAt = serializers.DateTimeField(source="heartbeat_at", allow_null=True)
    durationMs = serializers.IntegerField(source="duration_ms", allow_null=True)
    errorMessage = serializers.CharField(source="error_message")

    def to_representation(self, sync_log: PfaSyncLog) -> dict:
        data = super().to_representation(sync_log)
        if sync_log.direction == PfaSyncLog.Direction.WRITE:
            del data["syncType"]  # a write run is neither full nor incremental
        return data


class RecordKeptAsideSerializer(serializers.Serializer):
    pfaId = serializers.CharField(source="pfa_id")
    reason = serializers.CharField()
    rawRow = serializers.JSONField(source="raw_row")


class SyncLogProgressSerializer(SyncLogOutputSerializer):
    """A run with its live progress and the first rows it had to keep aside."""

    progressPercent = serializers.SerializerMethodField()
    recordsKeptAside = serializers.SerializerMethodField()

    def get_progressPercent(self, sync_log: PfaSyncLog) -> float:  # noqa: N802 (API field name)
        if sync_log.status == SyncStatus.COMPLETED:
            return 100.0
        if not sync_log.records_total:
            return 0.0
        return round(min(100.0, 100.0 * sync_log.records_processed / sync_log.records_total), 1)

    @extend_schema_field(RecordKeptAsideSerializer(many=True))
    def get_recordsKeptAside(self, sync_log: PfaSyncLog) -> list[dict]:  # noqa: N802 (API field name)
        kept = PfaSyncRecordError.objects.filter(sync_log=sync_log).order_by("id")[:RECORDS_KEPT_ASIDE_SHOWN]
        return RecordKeptAsideSerializer(kept, many=True).data


class StrictBooleanField(serializers.BooleanField):
    """A JSON `true` or `false` only (DRF's BooleanField also takes "yes", "1", 0...)."""

    def to_internal_value(self, data) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class SyncTriggerInputSerializer(InputSerializer):
    organizationId = serializers.CharField(
        max_length=64,
        help_text=f'UUID or code; "{EVERY_ORGANIZATION}" (staff only): every active organization (for a write: '
        "every active organization with edits waiting).",
    )
    syncType = serializers.ChoiceField(choices=PfaSyncLog.SyncType.choices, default=PfaSyncLog.SyncType.FULL)
    direction = serializers.ChoiceField(
        choices=PfaSyncLog.Direction.choices,
        default=PfaSyncLog.Direction.READ,
        help_text="`read` (PEMS to the mirror) or `write` (the committed edits to PEMS; syncType does not apply).",
    )
    allowMassDelete = StrictBooleanField(
        default=False,
        help_text="Staff only, full reads only: mark the records PEMS no longer holds deleted even when they "
        "are more than SYNC_DELETE_GUARD_PERCENT of the organization's (otherwise such a run deletes none).",
    )

    def validate(self, data: dict) -> dict:
        if data["allowMassDelete"] and data["direction"] == PfaSyncLog.Direction.WRITE:
            raise exceptions.ValidationError({"allowMassDelete": ["A write run deletes nothing."]})
        if data["allowMassDelete"] and data["syncType"] != PfaSyncLog.SyncType.FULL:
            raise exceptions.ValidationError({"allowMassDelete": ["Only a full read deletes records."]})
        if data["allowMassDelete"] and data["organizationId"] == EVERY_ORGANIZATION:
            raise exceptions.ValidationError(
                {"allowMassDelete": ["Name the one organization (organizationId) whose deletions to apply."]}
            )
        return data


class SkippedOrganizationSerializer(serializers.Serializer):
    organizationId = serializers.UUIDField()
    organizationCode = serializers.CharField()
    batchId = serializers.UUIDField(allow_null=True, help_text="The batch of the run already active.")
    logId = serializers.UUIDField(allow_null=True, help_text="The run already active.")
    message = serializers.CharField()


class SyncTriggerOutputSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    batchId = serializers.UUIDField()
    logId = serializers.UUIDField(required=False, help_text="The queued run (single organization).")
    logIds = serializers.ListField(child=serializers.UUIDField())
    skipped = SkippedOrganizationSerializer(
        many=True,
        help_text="Organizations left out: already syncing, without a connection, not queued, or (a write) with "
        "nothing to write.",
    )
    message = serializers.CharField()
    warning = serializers.CharField(
        required=False, help_text="No worker is alive: the run waits in the queue until one starts."
    )


class SyncInProgressSerializer(serializers.Serializer):
    success = serializers.BooleanField(default=False)
    error = serializers.CharField(default="SYNC_IN_PROGRESS")
    message = serializers.CharField()
    batchId = serializers.UUIDField(allow_null=True)
    logId = serializers.UUIDField(allow_null=True)
    organizationCode = serializers.CharField()


class SyncNotQueuedSerializer(serializers.Serializer):
    success = serializers.BooleanField(default=False)
    error = serializers.CharField(default="QUEUE_UNAVAILABLE")
    message = serializers.CharField()
    batchId = serializers.UUIDField(help_text="The batch: its run was failed at once (see /api/sync/status/{key}).")


def _skipped(refusal: SyncRefused) -> dict:
    active = getattr(refusal, "active_log", None)
    return {
        "organizationId": str(refusal.organization.pk),
        "organizationCode": refusal.organization.code,
        "batchId": str(active.batch_id) if active else None,
        "logId": str(active.pk) if active else None,
        "message": str(refusal),
    }


class SyncTriggerApi(ApiView):
    """Queue a read sync, or a write run of the committed edits (`direction`): the `queued` run
    exists when this answers; a worker runs it."""

    @extend_schema(
        request=SyncTriggerInputSerializer,
        responses={
            202: SyncTriggerOutputSerializer,
            **error_responses(400, 401, 403, 404),
            409: OpenApiResponse(SyncInProgressSerializer, description="A sync of this organization is active."),
            503: OpenApiResponse(
                SyncNotQueuedSerializer, description="The task queue refused the run, which was failed at once."
            ),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = SyncTriggerInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        key = serializer.validated_data["organizationId"]
        every = key == EVERY_ORGANIZATION
        write = serializer.validated_data["direction"] == PfaSyncLog.Direction.WRITE
        if not every:
            organizations = [visible_organization_or_404(request.user, key)]
        if not can_trigger_sync(request.user):
            raise exceptions.PermissionDenied("You do not have permission to start a sync.")
        if every and not can_sync_every_organization(request.user):
            raise exceptions.PermissionDenied(f'Only staff may sync every organization ("{EVERY_ORGANIZATION}").')
        allow_mass_delete = serializer.validated_data["allowMassDelete"]
        if allow_mass_delete and not can_allow_mass_delete(request.user):
            raise exceptions.PermissionDenied("Only staff may allow a mass deletion (allowMassDelete).")
        if every:
            organizations = list(
                organizations_with_edits_waiting() if write else organizations_to_sync(including_sync_disabled=True)
            )
        # One transaction: every run of the batch is visible before any task is enqueued, and the
        # tasks are enqueued (or refused by the broker) by the time it ends.
        with transaction.atomic():
            batch = sync_start(
                organizations=organizations,
                trigger=PfaSyncLog.Trigger.API,
                triggered_by=request.user,
                sync_type=serializer.validated_data["syncType"],
                direction=serializer.validated_data["direction"],
                allow_mass_delete=allow_mass_delete,
            )
        skipped = [_skipped(refusal) for refusal in batch.refused]
        not_queued = [refusal for refusal in batch.refused if isinstance(refusal, SyncNotQueued)]
        if not batch.queued and not_queued:
            raise ApiError(
                status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
                error="QUEUE_UNAVAILABLE",
                message=str(not_queued[0]),
                batchId=str(batch.batch_id),
            )
        nothing_to_write = bool(batch.refused) and isinstance(batch.refused[0], SyncNothingToWrite)
        if not every and not batch.queued and not nothing_to_write:
            refusal = batch.refused[0]
            if isinstance(refusal, SyncNotConfigured):
                raise ApiError(status_code=400, error="NOT_CONFIGURED", message=str(refusal))
            raise ApiError(
                status_code=status.HTTP_409_CONFLICT,
                error="SYNC_IN_PROGRESS",
                message=skipped[0]["message"],
                batchId=skipped[0]["batchId"],
                logId=skipped[0]["logId"],
                organizationCode=skipped[0]["organizationCode"],
            )
        body = {
            "success": True,
            "batchId": str(batch.batch_id),
            "logIds": [str(sync_log.pk) for sync_log in batch.queued],
            "skipped": skipped,
        }
        what = "Write run queued" if write else "Sync triggered"
        if not every and nothing_to_write:
            body["message"] = skipped[0]["message"]  # no run: the answer says why in `skipped`
        elif not every:
            body["logId"] = body["logIds"][0]
            body["message"] = f"{what} for organization {organizations[0].code}"
        else:
            codes = ", ".join(sync_log.organization.code for sync_log in batch.queued) or "none"
            body["message"] = f"{what} for {len(batch.queued)} organization(s): {codes}"
            if skipped:
                body["message"] += f"; {len(skipped)} skipped (see skipped)"
        if warning := queued_runs_warning(batch.queued):
            body["warning"] = warning
        return Response(body, status=status.HTTP_202_ACCEPTED)


class SyncCancelOutputSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    logId = serializers.UUIDField()
    status = serializers.ChoiceField(
        choices=SyncStatus.choices, help_text="`cancelled` (it was queued), or `running` until its next page boundary."
    )
    message = serializers.CharField()


class RunEndedSerializer(serializers.Serializer):
    success = serializers.BooleanField(default=False)
    error = serializers.CharField(default="RUN_ENDED")
    message = serializers.CharField()
    logId = serializers.UUIDField()
    status = serializers.ChoiceField(choices=SyncStatus.choices, help_text="How the run ended.")


class SyncCancelApi(ApiView):
    """Cancel a run: a queued one ends `cancelled` at once, a running one at its next page boundary
    (its committed pages are kept). Needs the permission to start syncs."""

    @extend_schema(
        request=None,
        responses={
            202: SyncCancelOutputSerializer,
            **error_responses(401, 403, 404),
            409: OpenApiResponse(RunEndedSerializer, description="The run has ended already."),
        },
    )
    def post(self, request: Request, log_id: uuid.UUID) -> Response:
        sync_log = sync_logs_visible_to(request.user).filter(pk=log_id).first()
        if sync_log is None:
            raise exceptions.NotFound(f"No sync run {log_id}.")
        if not can_cancel_sync(request.user):
            raise exceptions.PermissionDenied("You do not have permission to cancel a sync.")
        try:
            sync_log = sync_cancel(sync_log=sync_log)
        except RunEnded as ended:
            raise ApiError(
                status_code=status.HTTP_409_CONFLICT,
                error="RUN_ENDED",
                message=str(ended),
                logId=str(sync_log.pk),
                status=sync_log.status,
            ) from None
        if sync_log.status == SyncStatus.CANCELLED:
            message = f"Run {sync_log.pk} was queued: it is cancelled before it started."
        else:
            message = f"Run {sync_log.pk} is running: it stops at its next page boundary and ends cancelled."
        return Response(
            {"success": True, "logId": str(sync_log.pk), "status": sync_log.status, "message": message},
            status=status.HTTP_202_ACCEPTED,
        )


class SyncStatusFilterSerializer(InputSerializer):
    organizationId = serializers.CharField(required=False, max_length=64, help_text="UUID or code.")
    limit = serializers.IntegerField(min_value=1, max_value=100, default=10)


class SyncSummarySerializer(serializers.Serializer):
    totalSyncs = serializers.IntegerField()
    successfulSyncs = serializers.IntegerField()
    failedSyncs = serializers.IntegerField()
    lastSync = serializers.DateTimeField(
        allow_null=True, help_text="The last sync: when the newest completed read of these runs ended."
    )


class SyncStatusListOutputSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    logs = SyncLogOutputSerializer(many=True)
    summary = SyncSummarySerializer()


class SyncStatusListApi(ApiView):
    """The newest runs of one or every visible organization, with totals over the same filter."""

    query_serializer_class = SyncStatusFilterSerializer

    @extend_schema(
        parameters=[SyncStatusFilterSerializer],
        operation_id="sync_status_list",
        responses={200: SyncStatusListOutputSerializer, **error_responses(400, 401, 404)},
    )
    def get(self, request: Request) -> Response:
        filters = SyncStatusFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        sync_logs = sync_logs_visible_to(request.user)
        if key := filters.validated_data.get("organizationId"):
            sync_logs = sync_logs.filter(organization=visible_organization_or_404(request.user, key))
        totals = sync_logs.aggregate(
            totalSyncs=Count("pk"),
            successfulSyncs=Count("pk", filter=Q(status=SyncStatus.COMPLETED)),
            failedSyncs=Count("pk", filter=Q(status=SyncStatus.FAILED)),
        )
        newest = list(sync_logs.order_by("-created_at", "-pk")[: filters.validated_data["limit"]])
        summary = {**totals, "lastSync": last_sync_of(sync_logs)}
        return Response(
            {
                "success": True,
                "logs": SyncLogOutputSerializer(newest, many=True).data,
                "summary": SyncSummarySerializer(summary).data,
            }
        )


class SyncBatchOutputSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    batchId = serializers.UUIDField()
    finished = serializers.BooleanField(help_text="Every run of the batch has ended.")
    logs = SyncLogProgressSerializer(many=True)


class SyncStatusDetailApi(ApiView):
    """One run (by its id) or every run of a batch (by batch id), with live progress."""

    @extend_schema(responses={200: SyncBatchOutputSerializer, **error_responses(401, 404)})
    def get(self, request: Request, key: uuid.UUID) -> Response:
        sync_logs = list(
            sync_logs_visible_to(request.user).filter(Q(pk=key) | Q(batch_id=key)).order_by("organization__code")
        )
        if not sync_logs:
            raise exceptions.NotFound(f"No sync run or batch {key}.")
        return Response(
            {
                "success": True,
                "batchId": str(sync_logs[0].batch_id),
                "finished": all(sync_log.status in SyncStatus.terminal() for sync_log in sync_logs),
                "logs": SyncLogProgressSerializer(sync_logs, many=True).data,
            }
        )


class LastRunSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    direction = serializers.ChoiceField(choices=PfaSyncLog.Direction.choices)
    status = serializers.CharField()
    createdAt = serializers.DateTimeField(source="created_at")
    completedAt = serializers.DateTimeField(source="completed_at", allow_null=True)


class FullSyncScheduleSerializer(serializers.Serializer):
    enabled = serializers.BooleanField(
        help_text="Full reads are scheduled (the worker is on and SYNC_FULL_INTERVAL set)."
    )
    nextRun = serializers.DateTimeField(source="next_run", allow_null=True)
    interval = serializers.CharField(allow_null=True, help_text="Cron expression of the full reads; null: none.")


class WorkerSerializer(serializers.Serializer):
    enabled = serializers.BooleanField(help_text="The schedules are on (ENABLE_SYNC_WORKER); says nothing of `alive`.")
    alive = serializers.BooleanField(
        help_text="A worker cluster (`manage.py qcluster`) was seen within two heartbeats (2 x SYNC_HEARTBEAT_SECONDS)."
    )
    syncsRunning = serializers.IntegerField(
        source="syncs_running", help_text="Runs (reads and writes) running now; 0 says nothing of `alive`."
    )
    nextRun = serializers.DateTimeField(source="next_run", allow_null=True, help_text="Of the incremental reads.")
    interval = serializers.CharField(help_text="Cron expression of the incremental reads.")
    fullSync = FullSyncScheduleSerializer(source="full_sync", help_text="The scheduled full reads.")
    lastRuns = serializers.DictField(
        source="last_runs", child=LastRunSerializer(allow_null=True), help_text="Newest run per visible organization."
    )


class WorkerStatusOutputSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    worker = WorkerSerializer()


class WorkerStatusApi(ApiView):
    """Whether a worker is alive, how many syncs run now, and when the incremental and full reads run next."""

    @extend_schema(responses={200: WorkerStatusOutputSerializer, **error_responses(401)})
    def get(self, request: Request) -> Response:
        worker = worker_status()
        visible = set(organizations_visible_to(request.user).values_list("code", flat=True))
        worker["last_runs"] = {code: run for code, run in worker["last_runs"].items() if code in visible}
        return Response({"success": True, "worker": WorkerSerializer(worker).data})


# --- Organizations, with their last run -------------------------------------------------------


class OrganizationSyncOutputSerializer(mirror_api.OrganizationOutputSerializer):
    lastSyncAt = serializers.DateTimeField(
        source="last_sync_at", allow_null=True, help_text="The last sync: when the newest completed read ended."
    )
    lastSyncStatus = serializers.CharField(source="last_run_status", allow_null=True)
    mirrorRecordCount = serializers.IntegerField(source="mirror_size")


class OrganizationListOutputSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    organizations = OrganizationSyncOutputSerializer(many=True)


class OrganizationListApi(mirror_api.OrganizationListApi):
    """The mirror's organization list, with each organization's newest run."""

    output_serializer_class = OrganizationSyncOutputSerializer

    def organizations_for(self, user) -> QuerySet[Organization]:
        return organizations_with_last_run(super().organizations_for(user)).annotate(mirror_size=mirror_size_subquery())

    @extend_schema(
        operation_id="organizations_list", responses={200: OrganizationListOutputSerializer, **error_responses(401)}
    )
    def get(self, request: Request) -> Response:
        return super().get(request)
