"""`manage.py sync_pems`: run the read sync inline, with live progress and a summary table."""

import signal
import sys
import threading
import time

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from mirror.models import Organization
from synclog.engine import SyncOutcome, sync_organizations
from synclog.models import PfaSyncLog


class Command(BaseCommand):
    help = (
        "Sync PFA records from PEMS into the mirror for the given (or every active, sync-enabled) "
        "organization. Ctrl-C stops at the next page boundary and leaves the run cancelled."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--org",
            action="append",
            dest="orgs",
            metavar="CODE",
            help="organization code; repeat for several (default: all active)",
        )
        parser.add_argument(
            "--full",
            action="store_true",
            help="read every record (default: only those saved since the last completed read)",
        )
        parser.add_argument(
            "--allow-mass-delete",
            action="store_true",
            help="with --full: mark the records PEMS no longer holds deleted even past SYNC_DELETE_GUARD_PERCENT",
        )

    def handle(self, *args, **options):
        if options["allow_mass_delete"] and not options["full"]:
            raise CommandError("--allow-mass-delete needs --full: only a full read finds the records PEMS deleted.")
        organizations = self._organizations(options["orgs"])
        stop = threading.Event()
        progress = _ProgressLine(self.stdout)
        previous = {sig: signal.signal(sig, self._stop_handler(stop)) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            outcomes = sync_organizations(
                organizations=organizations,
                trigger=PfaSyncLog.Trigger.COMMAND,
                sync_type=PfaSyncLog.SyncType.FULL if options["full"] else PfaSyncLog.SyncType.INCREMENTAL,
                allow_mass_delete=options["allow_mass_delete"],
                stop=stop,
                on_progress=progress.update,
            )
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        progress.close()
        self._print_summary(outcomes)
        failed = [o.organization.code for o in outcomes if not o.succeeded]
        if failed:
            raise CommandError(f"{len(failed)} of {len(outcomes)} organizations did not complete: {', '.join(failed)}")

    def _organizations(self, codes: list[str] | None) -> list[Organization]:
        if not codes:
            organizations = list(Organization.objects.filter(is_active=True, sync_enabled=True))
            if not organizations:
                raise CommandError("No active organization with sync enabled: add one with add_organization.")
            return organizations
        codes = [code.upper() for code in codes]
        found = {o.code: o for o in Organization.objects.filter(code__in=codes)}
        unknown = [code for code in codes if code not in found]
        if unknown:
            raise CommandError(f"Unknown organization code(s): {', '.join(unknown)}")
        return [found[code] for code in codes]

    def _stop_handler(self, stop: threading.Event):
        def handle(signum, frame):
            if stop.is_set():
                raise KeyboardInterrupt  # second signal: stop now; the run is still left cancelled
            stop.set()
            self.stderr.write("\nStopping at the next page boundary (press Ctrl-C again to stop now)...")

        return handle

    def _print_summary(self, outcomes: list[SyncOutcome]) -> None:
        header = (
            "Org",
            "Status",
            "Total",
            "Processed",
            "Inserted",
            "Updated",
            "Unchanged",
            "Deleted",
            "Errored",
            "Duration",
        )
        rows = [header]
        for outcome in outcomes:
            log = outcome.sync_log
            if log is None:
                rows.append((outcome.organization.code, "skipped", *[""] * (len(header) - 2)))
                continue
            rows.append(
                (
                    outcome.organization.code,
                    log.status,
                    _n(log.records_total),
                    _n(log.records_processed),
                    _n(log.records_inserted),
                    _n(log.records_updated),
                    _n(log.records_unchanged),
                    _n(log.records_deleted),
                    _n(log.records_errored),
                    f"{(log.duration_ms or 0) / 1000:.1f}s",
                )
            )
        widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
        self.stdout.write("")
        for index, row in enumerate(rows):
            self.stdout.write(
                "  ".join(
                    str(cell).rjust(w) if i > 1 else str(cell).ljust(w) for i, (cell, w) in enumerate(zip(row, widths))
                )
            )
            if index == 0:
                self.stdout.write("  ".join("-" * w for w in widths))
        for outcome in outcomes:
            if outcome.error_message:
                self.stdout.write(f"{outcome.organization.code}: {outcome.error_message}")


def _n(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


class _ProgressLine:
    """A live per-organization progress bar: records, percent and records/s."""

    def __init__(self, stream):
        self.stream = stream
        self.interactive = sys.stdout.isatty()
        self.current = None
        self.last_print = 0.0

    def update(self, sync_log: PfaSyncLog) -> None:
        if self.current != sync_log.pk:
            self.close()
            self.current = sync_log.pk
        now = time.monotonic()
        if not self.interactive and now - self.last_print < 2:
            return
        self.last_print = now
        elapsed = max((timezone.now() - sync_log.started_at).total_seconds(), 1e-3)
        rate = sync_log.records_processed / elapsed
        total = sync_log.records_total or 0
        done = min(sync_log.records_processed / total, 1.0) if total else 0.0
        bar = "#" * int(done * 30)
        line = (
            f"{sync_log.organization.code:<8} [{bar:<30}] {sync_log.records_processed:>10,}/{total:,} "
            f"{done:6.1%}  {rate:,.0f} rec/s"
        )
        if self.interactive:
            self.stream.write("\r" + line, ending="")
            self.stream.flush()
        else:
            self.stream.write(line)

    def close(self) -> None:
        if self.current is not None and self.interactive:
            self.stream.write("")
        self.current = None
