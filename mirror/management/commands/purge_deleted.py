"""`manage.py purge_deleted`: delete for good the mirror records PEMS deleted, after the retention days."""

from django.core.management.base import BaseCommand, CommandError

from mirror.management.organizations import add_org_argument, organizations_from_codes
from mirror.models import Organization
from mirror.purge import pfa_deleted_purge


class Command(BaseCommand):
    help = (
        "Delete for good the mirror records marked deleted in PEMS more than --days days ago "
        "(default SYNC_DELETED_RETENTION_DAYS), of the given organizations or of all."
    )

    def add_arguments(self, parser):
        add_org_argument(parser, default="all")
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
        return organizations_from_codes(codes) if codes else [None]
