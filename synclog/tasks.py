"""django-q2 entry points: a few lines each, calling the worker's functions (which start runs through
`synclog.runs` and run them through `synclog.dispatch`)."""

from datetime import datetime

from synclog import worker
from synclog.models import PfaSyncLog


def sync_execute(sync_log_id: str) -> str:
    """Run one queued sync; raises on failure so the task is recorded as failed."""
    return worker.sync_execute_queued(sync_log_id)


def sync_tick(scheduled_for: str | None = None) -> str:
    """The incremental schedule: free lost runs, queue one incremental read per configured
    organization, purge old deletions. django-q2 passes `scheduled_for`, the moment it was due."""
    return worker.sync_tick(scheduled_for=datetime.fromisoformat(scheduled_for) if scheduled_for else None)


def sync_full() -> str:
    """The full schedule: free lost runs, then queue one full read per configured organization."""
    return worker.sync_full()


def write_after_commit(organization_id: str, user_id: int | None = None) -> str:
    """Queue the organization's write run once a planner committed edits (`worker.on_edits_committed` enqueues this)."""
    from django.contrib.auth import get_user_model

    from mirror.models import Organization

    user = get_user_model().objects.filter(pk=user_id).first() if user_id else None
    organization = Organization.objects.get(pk=organization_id)
    batch = worker.write_runs_queue(trigger=PfaSyncLog.Trigger.API, organizations=[organization], triggered_by=user)
    if batch.queued:
        return f"{organization.code}: write run queued"
    if batch.refused:
        return f"{organization.code}: {batch.refused[0]}"
    return f"{organization.code}: nothing waits to be written (an earlier run wrote it): no write run"
