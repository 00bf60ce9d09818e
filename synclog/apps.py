"""The synclog app: sync runs, what happened in them, the sync engine and its interfaces."""

from django.apps import AppConfig


class SynclogConfig(AppConfig):
    name = "synclog"
    verbose_name = "PEMS sync"

    def ready(self) -> None:
        from synclog.worker import validate_sync_schedules

        # A wrong cron expression stops start-up instead of silently never syncing.
        validate_sync_schedules()
