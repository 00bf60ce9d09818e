"""Read-side queries of the mirror: which organizations a user sees, finding one by UUID or code,
organizations by code, and the mirror's size (the records list and KPIs are in test_delta.py and
test_records_api.py)."""

import pytest
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone

from mirror.models import Organization
from mirror.selectors import (
    mirror_size_subquery,
    organization_get_visible,
    organizations_named,
    organizations_visible_to,
)
from mirror.tests.factories import OrganizationFactory, PfaMirrorFactory, user_with

pytestmark = pytest.mark.django_db


@pytest.fixture
def rio():
    return OrganizationFactory(code="RIO", name="Rio Grande")


@pytest.fixture
def hou():
    return OrganizationFactory(code="HOU", name="Houston")


@pytest.fixture
def member(rio):
    """A user who is a member of RIO only."""
    return user_with("ana", organizations=[rio])


def test_a_member_sees_their_organizations_staff_every_one_and_anonymous_none(rio, hou, member):
    staff = user_with("sam", is_staff=True)
    assert list(organizations_visible_to(member)) == [rio]
    assert set(organizations_visible_to(staff)) == {rio, hou}
    assert not organizations_visible_to(AnonymousUser()).exists()


@pytest.mark.parametrize("key", ["RIO", "rio", "  Rio ", "uuid"])
def test_an_organization_is_found_by_its_uuid_or_its_code_in_any_case(rio, member, key):
    assert organization_get_visible(user=member, key=str(rio.pk) if key == "uuid" else key) == rio


def test_an_organization_out_of_reach_is_not_found_naming_the_key(hou, member):
    with pytest.raises(Organization.DoesNotExist, match="Organization 'HOU' not found."):
        organization_get_visible(user=member, key="HOU")
    with pytest.raises(Organization.DoesNotExist, match="'NOPE'"):
        organization_get_visible(user=member, key="NOPE")


def test_organizations_named_come_in_the_order_given_each_once(rio, hou):
    assert organizations_named(["hou", "RIO", "HOU"]) == [hou, rio]
    with pytest.raises(LookupError, match="Unknown organization code\\(s\\): NOPE, GONE"):
        organizations_named(["RIO", "nope", "gone"])


def test_mirror_size_counts_live_records_only(rio, hou):
    def record(organization, pfa_id: str, *, deleted: bool = False) -> None:
        PfaMirrorFactory(organization=organization, pfa_id=pfa_id, deleted_at=timezone.now() if deleted else None)

    record(rio, "PFA-1")
    record(rio, "PFA-2")
    record(rio, "PFA-3", deleted=True)
    record(hou, "PFA-4", deleted=True)
    sizes = dict(Organization.objects.annotate(size=mirror_size_subquery()).values_list("code", "size"))
    assert sizes == {"RIO": 2, "HOU": 0}
