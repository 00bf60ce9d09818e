"""`manage.py purge_deleted`: delete for good the mirror records PEMS deleted, after the retention days."""

from django.core.management.base import BaseCommand, CommandError

from mirror.models import Organization
from mirror.selectors import organizations_named
from mirror.services import pfa_deleted_purge


class Command(BaseCommand):
    help = (
        "Delete for good the mirror records marked deleted in PEMS more than --days days ago "
        "(default SYNC_DELETED_RETENTION_DAYS), of the given organizations or of all."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--org",
            action="append",
            dest="orgs",
            metavar="CODE",
            help="organization code; repeat for several (default: all)",
        )
        parser.add_argument(
            "--days",
            type=int,
            metavar="N",
            help="purge records marked deleted more than N days ago (default: SYNC_DELETED_RETENTION_DAYS)",
        )

    def handle(self, *args, **options):
        if options["days"] is not None and options["days"] < 0:
            raise CommandError("--days cannot be negative.")
        purged = sum(
            pfa_deleted_purge(organization=organization, retention_days=options["days"])
            for organization in self._organizations(options["orgs"])
        )
        self.stdout.write(self.style.SUCCESS(f"Purged {purged} records deleted in PEMS."))

    def _organizations(self, codes: list[str] | None) -> list[Organization | None]:
        """The organizations named, or [None]: every organization at once."""
        if not codes:
            return [None]
        try:
            return organizations_named(codes)
        except LookupError as error:
            raise CommandError(str(error)) from None
