"""The grid filters the client sends (`mirror.pems.filters`)."""

from datetime import UTC, datetime

from mirror.pems import GridFilter, modified_since_filter, organization_filter
from mirror.tests.pems_stub import CHICAGO


def test_filters():
    assert organization_filter("RIO") == GridFilter("pfs_a_org", "=", "RIO")
    since = datetime(2025, 1, 15, 14, 0, 59, tzinfo=UTC)
    assert modified_since_filter(since, time_zone=CHICAGO) == GridFilter("pfs_lastmodified", ">=", "01/15/2025 08:00")
