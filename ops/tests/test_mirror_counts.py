"""Each organization's mirror size, counted by the worker (`ops.mirror_counts`): live and deleted
rows, exact as of the count."""

import pytest
from django.utils import timezone

from mirror.tests.factories import OrganizationFactory, PfaMirrorFactory
from ops.mirror_counts import mirror_counts_refresh
from ops.models import MirrorCount

pytestmark = pytest.mark.django_db


def counts() -> dict[str, tuple[int, int]]:
    return {
        count.organization.code: (count.live_rows, count.deleted_rows)
        for count in MirrorCount.objects.select_related("organization")
    }


def test_every_organization_is_counted_live_and_deleted_apart():
    rio = OrganizationFactory(code="RIO")
    OrganizationFactory(code="HOU")
    PfaMirrorFactory.create_batch(3, organization=rio)
    PfaMirrorFactory(organization=rio, deleted_at=timezone.now())
    mirror_counts_refresh()
    assert counts() == {"RIO": (3, 1), "HOU": (0, 0)}


def test_a_count_of_some_organizations_leaves_the_others_as_counted():
    rio, hou = OrganizationFactory(code="RIO"), OrganizationFactory(code="HOU")
    mirror_counts_refresh()
    PfaMirrorFactory(organization=rio)
    PfaMirrorFactory(organization=hou)
    mirror_counts_refresh(organization_ids=[rio.pk])
    assert counts() == {"RIO": (1, 0), "HOU": (0, 0)}
    mirror_counts_refresh()
    assert counts() == {"RIO": (1, 0), "HOU": (1, 0)}
