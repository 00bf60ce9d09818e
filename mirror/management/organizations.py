"""The `--org CODE` option of the commands that act on organizations (`sync_pems`, `purge_deleted`)."""

from django.core.management.base import CommandError

from mirror.models import Organization
from mirror.selectors import organizations_named


def add_org_argument(parser, *, default: str) -> None:
    """`--org CODE`, repeatable, into `options["orgs"]`; `default` says what none means."""
    parser.add_argument(
        "--org",
        action="append",
        dest="orgs",
        metavar="CODE",
        help=f"organization code; repeat for several (default: {default})",
    )


def organizations_from_codes(codes: list[str]) -> list[Organization]:
    """The organizations `--org` named, in order; CommandError naming the codes that match none."""
    try:
        return organizations_named(codes)
    except LookupError as error:
        raise CommandError(str(error)) from None
