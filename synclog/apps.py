"""The synclog app: sync runs, what happened in them, the sync engine and its interfaces."""

from django.apps import AppConfig


class SynclogConfig(AppConfig):
    name = "synclog"
    verbose_name = "PEMS sync"

    def ready(self) -> None:
        from mirror import delta
        from synclog.worker import on_edits_committed, validate_sync_schedules

        # A wrong cron expression stops start-up instead of silently never syncing.
        validate_sync_schedules()
        # Committed edits start their write run at once: the mirror announces them, the sync listens.
        delta.edits_committed.connect(on_edits_committed, dispatch_uid="synclog-write-after-commit")
