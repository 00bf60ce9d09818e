"""`manage.py sync_pems`: run the read sync inline, with live progress and a summary table."""

import logging
import signal
import sys
import threading
import time
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError, OutputWrapper
from django.utils import timezone
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn

from mirror.management.organizations import add_org_argument, organizations_from_codes
from mirror.models import Organization
from synclog.dispatch import SyncOutcome, sync_organizations
from synclog.models import PfaSyncLog
from synclog.selectors import organizations_to_sync


class Command(BaseCommand):
    # Recorded on each run (`triggeredBy` in the API): which command started it.
    command_name = "sync_pems"
    help = (
        "Sync PFA records from PEMS into the mirror for the given (or every active, sync-enabled) "
        "organization. Ctrl-C stops at the next page boundary and leaves the run cancelled."
    )

    def add_arguments(self, parser):
        add_org_argument(parser, default="every active organization with sync enabled")
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
        run_options = self.run_options(options)
        organizations = self._organizations(options["orgs"])
        stop = threading.Event()
        previous = {sig: signal.signal(sig, self._stop_handler(stop)) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            with _Progress(self.stdout, organizations) as progress:
                outcomes = sync_organizations(
                    organizations=organizations,
                    trigger=PfaSyncLog.Trigger.COMMAND,
                    command=self.command_name,
                    stop=stop,
                    on_progress=progress.update,
                    **run_options,
                )
                progress.finish(outcomes)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self._print_summary(outcomes)
        failed = [o.organization.code for o in outcomes if not o.succeeded]
        if failed:
            raise CommandError(f"{len(failed)} of {len(outcomes)} organizations did not complete: {', '.join(failed)}")

    def run_options(self, options: dict) -> dict:
        """What the runs are (`sync_organizations`' options), from the command's options."""
        if options["allow_mass_delete"] and not options["full"]:
            raise CommandError("--allow-mass-delete needs --full: only a full read finds the records PEMS deleted.")
        return {
            "sync_type": PfaSyncLog.SyncType.FULL if options["full"] else PfaSyncLog.SyncType.INCREMENTAL,
            "allow_mass_delete": options["allow_mass_delete"],
        }

    def default_organizations(self) -> list[Organization]:
        organizations = list(organizations_to_sync())
        if not organizations:
            raise CommandError("No active organization with sync enabled: add one with add_organization.")
        return organizations

    def _organizations(self, codes: list[str] | None) -> list[Organization]:
        return organizations_from_codes(codes) if codes else self.default_organizations()

    def _stop_handler(self, stop: threading.Event):
        def handle(signum, frame):
            if stop.is_set():
                raise KeyboardInterrupt  # second signal: stop now; the run is still left cancelled
            stop.set()
            self.stderr.write("\nStopping at the next page boundary (press Ctrl-C again to stop now)...")

        return handle

    # The summary's columns: a heading and the run's field, after Org and Status.
    SUMMARY_COLUMNS = (
        ("Total", "records_total"),
        ("Processed", "records_processed"),
        ("Inserted", "records_inserted"),
        ("Updated", "records_updated"),
        ("Unchanged", "records_unchanged"),
        ("Deleted", "records_deleted"),
        ("Errored", "records_errored"),
    )

    def _print_summary(self, outcomes: list[SyncOutcome]) -> None:
        header = ("Org", "Status", *(heading for heading, _ in self.SUMMARY_COLUMNS), "Duration")
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
                    *(_n(getattr(log, field)) for _, field in self.SUMMARY_COLUMNS),
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


class _Progress:
    """A progress bar per organization: records read of PEMS's count, percent, records/s and time
    left. Drawn by rich where the output is a terminal; elsewhere (a log file, CI) a plain line per
    organization at most every PLAIN_LINE_SECONDS, and one when its read has read every record."""

    PLAIN_LINE_SECONDS = 2.0

    def __init__(self, stdout: OutputWrapper, organizations: list[Organization]) -> None:
        self.stdout = stdout
        self.interactive = stdout.isatty()
        self.last_line: dict[str, float] = {}
        self.bars: Progress | None = None
        self.tasks: dict[str, TaskID] = {}
        self.redirected: list[tuple[logging.StreamHandler, object]] = []
        if self.interactive:
            # rich writes whole frames: it gets the stream itself, not the command's line-ending wrapper.
            console = Console(file=getattr(stdout, "_out", stdout))
            self.bars = Progress(
                TextColumn("{task.fields[code]:<8}"),
                BarColumn(bar_width=30),
                TextColumn("{task.fields[records]:>21}"),
                TaskProgressColumn(),
                TextColumn("{task.fields[rate]:>13}"),
                TextColumn("{task.fields[left]:>13}"),
                TextColumn("{task.fields[state]}"),
                console=console,
            )
            for organization in organizations:
                self.tasks[organization.code] = self.bars.add_task(
                    organization.code, total=None, code=organization.code, records="", rate="", left="", state="waiting"
                )

    def __enter__(self) -> "_Progress":
        if self.bars is not None:
            self.bars.start()  # from here on, sys.stderr writes above the bars instead of through them
            self.redirected = [
                (handler, handler.setStream(sys.stderr))
                for handler in _stream_handlers()
                if handler.stream is getattr(sys.stderr, "rich_proxied_file", None)
            ]
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.bars is not None:
            for handler, stream in self.redirected:
                handler.setStream(stream)
            self.bars.stop()

    def update(self, sync_log: PfaSyncLog) -> None:
        code = sync_log.organization.code
        processed, total = sync_log.records_processed, sync_log.records_total or 0
        elapsed = max((timezone.now() - sync_log.started_at).total_seconds(), 1e-3)
        rate = processed / elapsed
        records = f"{processed:,}/{total:,}"
        left = _time_left(total - processed, rate) if total else ""
        if self.bars is not None:
            self.bars.update(
                self.tasks[code],
                completed=processed,
                total=max(total, processed) or None,
                records=records,
                rate=f"{rate:,.0f} rec/s",
                left=f"{left} left" if left else "",
                state="running",
            )
            return
        now = time.monotonic()
        done = total and processed >= total
        if not done and now - self.last_line.get(code, 0.0) < self.PLAIN_LINE_SECONDS:
            return
        self.last_line[code] = now
        percent = f"{min(processed / total, 1.0):.1%}" if total else "?"
        self.stdout.write(
            f"{code}: {records} records ({percent}), {rate:,.0f} rec/s" + (f", {left} left" if left else "")
        )

    def finish(self, outcomes: list[SyncOutcome]) -> None:
        """Show how each organization's read ended on its bar."""
        if self.bars is None:
            return
        for outcome in outcomes:
            log = outcome.sync_log
            task = self.tasks[outcome.organization.code]
            if log is None:
                self.bars.update(task, total=1, completed=0, state="skipped")
            elif log.status == "completed":
                done = log.records_processed
                self.bars.update(task, total=max(done, 1), completed=max(done, 1), left="", state=log.status)
            else:
                self.bars.update(task, left="", state=log.status)


def _stream_handlers() -> list[logging.StreamHandler]:
    """The log handlers that write to a stream (the console handler writes to stderr)."""
    loggers = [logging.getLogger(), *logging.root.manager.loggerDict.values()]  # placeholders have no handlers
    handlers = {handler for logger in loggers for handler in getattr(logger, "handlers", [])}
    return [handler for handler in handlers if type(handler) is logging.StreamHandler]


def _time_left(records_left: int, rate: float) -> str:
    if records_left <= 0:
        return "0:00:00"
    if rate <= 0:
        return ""
    return str(timedelta(seconds=round(records_left / rate)))
