"""django-q2 entry points: a few lines each, calling the engine and the worker functions."""

from synclog import worker


def sync_execute(sync_log_id: str) -> str:
    """Run one queued sync; raises on failure so the task is recorded as failed."""
    return worker.sync_execute_queued(sync_log_id)


def sync_tick() -> str:
    """The scheduled tick: free lost runs, then queue one sync per configured organization."""
    return worker.sync_tick()
