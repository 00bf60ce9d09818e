"""`manage.py push_pems`: write the committed edits to PEMS inline, with live progress and a summary."""

from django.core.management.base import CommandError

from mirror.management.organizations import add_org_argument
from mirror.models import Organization
from synclog.management.commands.sync_pems import Command as SyncCommand
from synclog.models import PfaSyncLog
from synclog.selectors import organizations_with_edits_waiting


class Command(SyncCommand):
    command_name = "push_pems"
    help = (
        "Write the committed edits of the given (or every) organization to PEMS, one at a time in commit order, "
        "with a three-way merge where PEMS changed a record meanwhile. Ctrl-C stops after the edit being written."
    )
    SUMMARY_COLUMNS = (
        ("Total", "records_total"),
        ("Written", "records_written"),
        ("Rebased", "records_rebased"),
        ("Conflicts", "records_conflicts"),
        ("Failed", "records_errored"),
    )

    def add_arguments(self, parser):
        add_org_argument(parser, default="every active organization with committed edits waiting")

    def run_options(self, options: dict) -> dict:
        return {"direction": PfaSyncLog.Direction.WRITE}

    def default_organizations(self) -> list[Organization]:
        organizations = list(organizations_with_edits_waiting())
        if not organizations:
            raise CommandError("No organization has committed edits waiting to be written.")
        return organizations
