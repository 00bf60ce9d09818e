"""`manage.py setup_schedules`: create, update or remove the sync schedules from the environment."""

from django.core.management.base import BaseCommand

from synclog.worker import scheduled_organizations, schedules_upsert


class Command(BaseCommand):
    help = (
        "Create, update or remove the background sync schedules from ENABLE_SYNC_WORKER, SYNC_INTERVAL "
        "(incremental reads) and SYNC_FULL_INTERVAL (full reads; empty: none). Idempotent."
    )

    def handle(self, *args, **options):
        rows = schedules_upsert()
        for schedule, row in rows.items():
            if row is None:
                self.stdout.write(f"Sync schedule {schedule.name!r} is disabled ({schedule.off_reason}).")
                continue
            self.stdout.write(
                self.style.SUCCESS(
                    f"Sync schedule {schedule.name!r}: cron {schedule.cron!r} ({schedule.setting}), "
                    f"next run {row.next_run.isoformat()}."
                )
            )
        if any(rows.values()):
            codes = ", ".join(o.code for o in scheduled_organizations()) or "none"
            self.stdout.write(f"Organizations: {codes}.")
