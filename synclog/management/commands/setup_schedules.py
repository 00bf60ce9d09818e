"""`manage.py setup_schedules`: create, update or remove the sync schedule from the environment."""

from django.conf import settings
from django.core.management.base import BaseCommand

from synclog.worker import schedule_upsert, scheduled_organizations


class Command(BaseCommand):
    help = "Create or update the background sync schedule from ENABLE_SYNC_WORKER / SYNC_INTERVAL (idempotent)."

    def handle(self, *args, **options):
        schedule = schedule_upsert()
        if schedule is None:
            self.stdout.write("Background sync worker is disabled (ENABLE_SYNC_WORKER=false): no schedule.")
            return
        codes = ", ".join(o.code for o in scheduled_organizations()) or "none"
        self.stdout.write(
            self.style.SUCCESS(
                f"Sync schedule {schedule.name!r}: cron {settings.SYNC_INTERVAL!r}, next run "
                f"{schedule.next_run.isoformat()}, organizations: {codes}."
            )
        )
