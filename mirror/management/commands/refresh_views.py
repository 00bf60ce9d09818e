"""`manage.py refresh_views`: refresh the materialized KPI views now, inline."""

from django.core.management.base import BaseCommand

from mirror.materialized import views_refresh


class Command(BaseCommand):
    help = (
        "Refresh the materialized views pfa_kpi_summary and pfa_timeline_bounds now (CONCURRENTLY: readers "
        "never wait). If the worker is refreshing them already, that refresh covers this request."
    )

    def handle(self, *args, **options):
        outcome = views_refresh(now_anyway=True)
        if outcome.refreshes:
            self.stdout.write(self.style.SUCCESS(f"Refreshed the materialized views in {outcome.duration_ms} ms."))
        else:
            self.stdout.write("A refresh is running on the worker already; it refreshes once more for this request.")
