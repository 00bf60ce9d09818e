"""`manage.py sync_pems`'s progress: a rich bar per organization on a terminal, plain lines elsewhere,
and the summary table after either."""

import io
import re

import pytest
from django.core.management import call_command

from mirror.tests.factories import ApiConfigurationFactory, OrganizationFactory

pytestmark = pytest.mark.django_db

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Terminal(io.StringIO):
    """An output that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def organizations(pems_server):
    for code in ("RIO", "HOU"):
        ApiConfigurationFactory(organization=OrganizationFactory(code=code), base_url=pems_server.url, page_size=50)


def test_plain_lines_when_the_output_is_not_a_terminal(organizations):
    out = io.StringIO()
    call_command("sync_pems", "--full", stdout=out)
    output = out.getvalue()
    assert not ANSI_ESCAPE.search(output)
    assert re.search(r"^HOU: 80/80 records \(100\.0%\), [\d,]+ rec/s, 0:00:00 left$", output, re.MULTILINE)
    assert re.search(r"^RIO: 250/250 records \(100\.0%\), [\d,]+ rec/s, 0:00:00 left$", output, re.MULTILINE)
    assert re.search(r"^Org\s+Status\s+Total\s+Processed", output, re.MULTILINE)  # the summary table follows


def test_a_bar_per_organization_on_a_terminal(organizations):
    out = Terminal()
    call_command("sync_pems", "--full", stdout=out)
    screen = ANSI_ESCAPE.sub("", out.getvalue())
    for code, total in (("HOU", "80/80"), ("RIO", "250/250")):
        bar = next(line for line in reversed(screen.splitlines()) if line.startswith(code) and "rec/s" in line)
        assert total in bar and "100%" in bar and "completed" in bar
    assert re.search(r"^Org\s+Status\s+Total\s+Processed", screen, re.MULTILINE)
