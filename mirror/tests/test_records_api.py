"""The records REST API: the merged list, one record, drafts, commits, KPIs; scoping and permission."""

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone
from rest_framework.test import APIClient

from mirror import delta
from mirror.models import PfaMirror, PfaModification
from mirror.tests.factories import OrganizationFactory, mirror_record

pytestmark = pytest.mark.django_db


def planner(username: str, *organizations, can_edit: bool = True) -> APIClient:
    user = User.objects.create_user(username)
    user.organizations.add(*organizations)
    if can_edit:
        user.user_permissions.add(Permission.objects.get(codename="edit_pfa_records"))
    client = APIClient()
    client.force_authenticate(User.objects.get(pk=user.pk))
    return client


@pytest.fixture
def rio():
    organization = OrganizationFactory(code="RIO")
    for n in range(1, 6):
        mirror_record(
            organization, f"P{n}", category="CRANES" if n % 2 else "TRUCKS", data={"pfs_id": f"P{n}", "x": "raw"}
        )
    return organization


@pytest.fixture
def ann(rio):
    return planner("ann", rio)


@pytest.fixture
def bob(rio):
    return planner("bob", rio)


def records(client, **params) -> dict[str, dict]:
    response = client.get("/api/organizations/RIO/records", {"limit": 500, **params})
    assert response.status_code == 200, response.content
    return {row["pfaId"]: row for row in response.json()["records"]}


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["success"] is False
    return body


def test_a_record_shows_every_typed_field_in_camel_case(ann):
    row = records(ann)["P1"]
    assert row["forecastEndDate"] == "2027-03-01"
    assert row["monthlyRate"] == "1000.0000"
    assert row["isDiscontinued"] is False
    assert row["pfaClass"] == "" and row["version"] == 1 and row["changes"] == {}
    assert {"pemsRecordId", "pemsLastModified", "lastSyncedAt", "categoryDescription"} <= row.keys()


def test_a_planner_edits_commits_and_everyone_sees_it(ann, bob):
    response = ann.patch(
        "/api/organizations/RIO/records/P1",
        {"forecastStartDate": "2027-02-01", "monthlyRate": "5200.00", "changeReason": "site delayed"},
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["record"]["monthlyRate"] == "5200.0000"
    assert body["record"]["changes"]["monthlyRate"] == {
        "pems": "1000.0000",
        "value": "5200.0000",
        "state": "draft",
        "by": "ann",
    }
    assert body["modification"]["baseValues"] == {"forecastStartDate": "2027-01-01", "monthlyRate": "1000.0000"}
    assert records(bob)["P1"]["monthlyRate"] == "1000.0000"  # a draft is private
    assert records(ann, state="draft").keys() == {"P1"}
    response = ann.post("/api/organizations/RIO/drafts/commit", {}, format="json")
    assert response.json() == {"success": True, "committed": 1}
    seen_by_bob = records(bob)["P1"]
    assert seen_by_bob["forecastStartDate"] == "2027-02-01"
    assert seen_by_bob["changes"]["forecastStartDate"]["state"] == "committed"
    assert records(bob, state="committed").keys() == {"P1"}
    detail = bob.get("/api/organizations/RIO/records/P1").json()
    assert detail["data"] == {"pfs_id": "P1", "x": "raw"}
    assert [m["state"] for m in detail["modifications"]] == ["committed"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"monthlyRate": "lots"}, "monthlyRate"),
        ({"forecastStartDate": "02/01/2027"}, "forecastStartDate"),
        ({"isDiscontinued": "Y"}, "isDiscontinued"),
        ({"pemsRecordId": 3}, "pemsRecordId"),
        ({"pfaId": "P9"}, "pfaId"),
        ({"colour": "red"}, "colour"),
        ({"category": "CRANES"}, "category"),
        ({"changeReason": 5, "category": "X"}, "changeReason"),
    ],
)
def test_a_bad_edit_is_a_400_naming_the_field(ann, body, field):
    body = error_of(ann.patch("/api/organizations/RIO/records/P1", body, format="json"), 400)
    assert field in body["fields"], body
    assert not PfaModification.objects.exists()


def test_edits_of_deleted_or_unknown_records_are_refused(rio, ann):
    PfaMirror.objects.filter(pfa_id="P2").update(deleted_at=timezone.now())
    body = error_of(ann.patch("/api/organizations/RIO/records/P2", {"category": "X"}, format="json"), 400)
    assert "deleted in PEMS" in body["message"]
    error_of(ann.patch("/api/organizations/RIO/records/P404", {"category": "X"}, format="json"), 404)
    error_of(ann.get("/api/organizations/RIO/records/P2"), 404)
    error_of(ann.patch("/api/organizations/RIO/records/P1", {}, format="json"), 400)


def test_editing_needs_the_permission_and_the_organization(rio):
    viewer = planner("vic", rio, can_edit=False)
    assert records(viewer).keys() == {"P1", "P2", "P3", "P4", "P5"}
    error_of(viewer.patch("/api/organizations/RIO/records/P1", {"category": "X"}, format="json"), 403)
    error_of(viewer.post("/api/organizations/RIO/drafts/commit", {}, format="json"), 403)
    OrganizationFactory(code="HOU")
    outsider = planner("otto", OrganizationFactory(code="SEA"))
    for response in (
        outsider.get("/api/organizations/RIO/records"),
        outsider.get("/api/organizations/RIO/records/P1"),
        outsider.patch("/api/organizations/RIO/records/P1", {"category": "X"}, format="json"),
        outsider.get("/api/organizations/RIO/kpis"),
    ):
        error_of(response, 404)
    error_of(APIClient().get("/api/organizations/RIO/records"), 401)


def test_discarding_drafts_one_or_all(ann):
    for pfa_id in ("P1", "P2", "P3"):
        ann.patch(f"/api/organizations/RIO/records/{pfa_id}", {"dor": "BEO"}, format="json")
    assert ann.delete("/api/organizations/RIO/records/P1/draft").status_code == 200
    error_of(ann.delete("/api/organizations/RIO/records/P1/draft"), 404)
    response = ann.post("/api/organizations/RIO/drafts/discard", {"pfaIds": ["P2"]}, format="json")
    assert response.json() == {"success": True, "discarded": 1}
    assert records(ann, state="draft").keys() == {"P3"}
    assert PfaModification.objects.filter(state="discarded").count() == 2


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"forecastFrom": "2027-13-01"}, "forecastFrom"),
        ({"state": "written"}, "state"),
        ({"ordering": "colour"}, "ordering"),
        ({"cursor": "nonsense"}, "cursor"),
    ],
)
def test_bad_list_parameters_are_400_naming_them(ann, params, field):
    body = error_of(ann.get("/api/organizations/RIO/records", params), 400)
    assert field in body["fields"]


def test_the_list_filters_and_pages_with_a_cursor(ann):
    assert records(ann, category="TRUCKS").keys() == {"P2", "P4"}
    assert records(ann, search="p3").keys() == {"P3"}
    assert records(ann, forecastFrom="2027-03-02") == {}
    assert len(records(ann, forecastFrom="2027-03-01", forecastTo="2027-01-01")) == 5
    seen, cursor = [], None
    while True:
        params = {"limit": 2, "ordering": "-pfaId", **({"cursor": cursor} if cursor else {})}
        body = ann.get("/api/organizations/RIO/records", params).json()
        seen += [row["pfaId"] for row in body["records"]]
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert seen == ["P5", "P4", "P3", "P2", "P1"]
    other_ordering = ann.get("/api/organizations/RIO/records", {"limit": 2, "cursor": "x" + "A" * 10})
    assert other_ordering.status_code == 400


def test_the_list_answers_its_total_over_all_pages_when_asked(ann, bob):
    bob.patch("/api/organizations/RIO/records/P2", {"category": "CRANES"}, format="json")  # bob's draft only
    body = ann.get("/api/organizations/RIO/records", {"limit": 2}).json()
    assert "total" not in body
    body = ann.get("/api/organizations/RIO/records", {"limit": 2, "includeCount": "true"}).json()
    assert (len(body["records"]), body["total"]) == (2, 5)
    assert (
        ann.get("/api/organizations/RIO/records", {"category": "CRANES", "includeCount": "true"}).json()["total"] == 3
    )
    assert (
        bob.get("/api/organizations/RIO/records", {"category": "CRANES", "includeCount": "true"}).json()["total"] == 4
    )
    PfaMirror.objects.filter(pfa_id="P5").update(deleted_at=timezone.now())
    assert ann.get("/api/organizations/RIO/records", {"includeCount": "true"}).json()["total"] == 4
    assert error_of(ann.get("/api/organizations/RIO/records", {"includeCount": "maybe"}), 400)["fields"].keys() == {
        "includeCount"
    }


def test_a_record_with_an_edit_in_conflict_is_marked_with_its_id(rio, ann, bob):
    ann.patch("/api/organizations/RIO/records/P1", {"category": "LIFTS"}, format="json")
    ann.post("/api/organizations/RIO/drafts/commit", {}, format="json")
    bob.patch("/api/organizations/RIO/records/P1", {"dor": "SITE"}, format="json")
    bob.post("/api/organizations/RIO/drafts/commit", {}, format="json")
    first, second = PfaModification.objects.filter(pfa_id="P1").order_by("committed_at", "id")
    # A write run found both changed in PEMS meanwhile (the run itself is tested in synclog).
    for modification, fields in (
        (second, {"dor": ["", "SITE", "YARD"]}),
        (first, {"category": ["CRANES", "LIFTS", "X"]}),
    ):
        assert delta.modification_writing(modification)
        sides = {name: dict(zip(("base", "mine", "theirs"), values, strict=True)) for name, values in fields.items()}
        delta.modification_conflicted(modification, fields=sides)
    listed = records(ann)
    assert (listed["P1"]["conflict"], listed["P1"]["conflictIds"]) == (True, [first.pk, second.pk])
    assert listed["P1"]["changes"] == {} and listed["P1"]["category"] == "CRANES"  # PEMS's value is shown
    assert (listed["P2"]["conflict"], listed["P2"]["conflictIds"]) == (False, [])
    detail = ann.get("/api/organizations/RIO/records/P1").json()["record"]
    assert (detail["conflict"], detail["conflictIds"]) == (True, [first.pk, second.pk])
    assert records(ann, state="conflict").keys() == {"P1"}


def test_a_conflict_names_its_fields_as_the_api_does(rio, ann):
    ann.patch("/api/organizations/RIO/records/P1", {"monthlyRate": "1200.00"}, format="json")
    ann.post("/api/organizations/RIO/drafts/commit", {}, format="json")
    modification = PfaModification.objects.get(pfa_id="P1")
    assert delta.modification_writing(modification)
    delta.modification_conflicted(
        modification, fields={"monthly_rate": {"base": "1000.0000", "mine": "1200.0000", "theirs": "1300.0000"}}
    )
    detail = ann.get("/api/organizations/RIO/records/P1")
    (listed,) = detail.json()["modifications"]
    assert listed["errorMessage"] == "PEMS changed monthlyRate to '1300.0000' (from '1000.0000'; yours: '1200.0000')"
    conflicts = ann.get("/api/organizations/RIO/conflicts")
    assert conflicts.json()["conflicts"][0]["fields"].keys() == {"monthlyRate"}
    for response in (detail, conflicts):
        assert "monthly_rate" not in response.content.decode()


def test_kpis(ann):
    body = ann.get("/api/organizations/RIO/kpis").json()
    assert body["success"] is True
    assert {entry["category"] for entry in body["summary"]} <= {"CRANES", "TRUCKS"}
    assert set(body["timeline"]) == {"planStart", "planEnd", "forecastStart", "forecastEnd", "actualStart", "actualEnd"}


def test_kpis_show_amounts_as_decimal_strings_and_bounds_as_dates(ann):
    from mirror.materialized import views_refresh

    PfaMirror.objects.filter(pfa_id="P1").update(source="Rental", monthly_rate="1000.5")
    views_refresh()
    response = ann.get("/api/organizations/RIO/kpis")
    assert response.status_code == 200, response.content
    body = response.json()
    rental = [entry for entry in body["summary"] if entry["source"] == "Rental"]
    assert rental and all(isinstance(entry["monthlyRateSum"], str) for entry in rental)
    # CRANES: P1 at 1,000.5 and two records at the factory's 1,000.
    assert "3000.50" in {entry["monthlyRateSum"] for entry in rental}
    assert body["timeline"]["forecastEnd"] == "2027-03-01"
    assert isinstance(body["refreshedAt"], str)
