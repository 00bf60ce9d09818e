"""Strict requests: the body's size limit, text the database cannot keep, unknown keys and query
parameters, one spelling per field, one wording per kind of error. Each answer is in the error
shape and nothing is changed by a refused request."""

import base64
import json

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from mirror.models import PfaMirror, PfaModification
from mirror.tests.factories import ApiConfigurationFactory, OrganizationFactory, mirror_record, user_with
from synclog.models import PfaSyncLog

pytestmark = pytest.mark.django_db

RECORD = "/api/organizations/RIO/records/P1"


@pytest.fixture
def rio():
    organization = ApiConfigurationFactory(organization=OrganizationFactory(code="RIO")).organization
    for n in range(1, 4):
        mirror_record(organization, f"P{n}", manufacturer="Komatsu")
    return organization


@pytest.fixture
def planner(rio) -> User:
    return user_with("ann", "mirror.edit_pfa_records", "synclog.trigger_sync", organizations=[rio])


def client_for(user: User | None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


@pytest.fixture
def ann(planner) -> APIClient:
    return client_for(planner)


def error_of(response, status: int, code: str = "VALIDATION_ERROR") -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["success"] is False and body["error"] == code and body["message"], body
    return body


def raw(client: APIClient, method: str, path: str, text: str):
    """A JSON body sent as written (json.dumps cannot write a lone surrogate as `\\ud800`)."""
    return getattr(client, method)(path, data=text.encode(), content_type="application/json")


def unchanged_mirror() -> list:
    return list(PfaMirror.objects.order_by("pfa_id").values_list("pfa_id", "manufacturer", "version"))


# --- Limits -----------------------------------------------------------------------------------------


def test_a_body_over_the_limit_is_413_before_it_is_parsed(ann, settings):
    settings.API_MAX_BODY_BYTES = 4096
    before = unchanged_mirror()
    body = error_of(ann.patch(RECORD, {"manufacturer": "x" * 5000}, format="json"), 413, "PAYLOAD_TOO_LARGE")
    assert "4096" in body["message"]
    # Not even parsed: the same body, broken JSON, is a 413 as well.
    error_of(raw(ann, "patch", RECORD, "{" * 5000), 413, "PAYLOAD_TOO_LARGE")
    assert unchanged_mirror() == before and not PfaModification.objects.exists()


def test_the_default_limit_is_one_megabyte(ann):
    body = json.dumps({"manufacturer": "Komatsu", "changeReason": "x" * 1000}) + " " * (1024 * 1024)
    error_of(raw(ann, "patch", RECORD, body), 413, "PAYLOAD_TOO_LARGE")
    error_of(ann.post("/api/auth/login", {"username": "x" * (1024 * 1024), "password": "pw"}, format="json"), 413,
             "PAYLOAD_TOO_LARGE")  # fmt: skip


def test_a_change_reason_over_2000_characters_is_refused(ann):
    body = error_of(ann.patch(RECORD, {"manufacturer": "CAT", "changeReason": "x" * 2001}, format="json"), 400)
    assert list(body["fields"]) == ["changeReason"]
    assert not PfaModification.objects.exists()
    response = ann.patch(RECORD, {"manufacturer": "CAT", "changeReason": "x" * 2000}, format="json")
    assert response.status_code == 200, response.content


def test_a_change_reason_must_be_a_string(ann):
    body = error_of(ann.patch(RECORD, {"manufacturer": "CAT", "changeReason": 5}, format="json"), 400)
    assert body["fields"] == {"changeReason": ["Must be a string."]}


@pytest.mark.parametrize(
    ("path", "payload", "field"),
    [
        ("/api/organizations/RIO/drafts/commit", {"pfaIds": [1686, "P1"]}, "pfaIds"),
        ("/api/sync/trigger", {"organizationId": 5}, "organizationId"),
        ("/api/auth/login", {"username": 5, "password": "pw"}, "username"),
    ],
)
def test_text_is_a_json_string_never_a_number_made_text(ann, path, payload, field):
    body = error_of(ann.post(path, payload, format="json"), 400)
    assert list(body["fields"]) == [field]
    assert not PfaSyncLog.objects.exists()


# --- Characters ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('{"manufacturer": "K\\ud800"}', "manufacturer"),
        ('{"manufacturer": "CAT", "changeReason": "\\udfff late"}', "changeReason"),
        ('{"manufacturer": "K\\u0000"}', "manufacturer"),
        ('{"manufacturer": "CAT", "changeReason": "a\\u0000b"}', "changeReason"),
        ('{"manu\\ud800": "CAT"}', "manu\\ud800"),
    ],
)
def test_a_lone_surrogate_or_a_nul_in_a_patch_is_400_naming_the_field(ann, text, field):
    before = unchanged_mirror()
    body = error_of(raw(ann, "patch", RECORD, text), 400)
    assert field in body["fields"]
    assert unchanged_mirror() == before and not PfaModification.objects.exists()


def test_a_lone_surrogate_in_a_merge_is_400_naming_the_value(ann, planner, rio):
    conflict = PfaModification.objects.create(
        organization=rio, pfa_id="P1", author=planner, state="conflict", base_version=1
    )
    text = '{"resolution": "merge", "values": {"manufacturer": "\\ud800"}}'
    body = error_of(raw(ann, "post", f"/api/modifications/{conflict.pk}/resolve", text), 400)
    assert list(body["fields"]) == ["values.manufacturer"]
    conflict.refresh_from_db()
    assert conflict.state == "conflict"


def test_a_lone_surrogate_in_a_login_is_400_not_500():
    client = APIClient()
    body = error_of(raw(client, "post", "/api/auth/login", '{"username": "\\ud800", "password": "pw"}'), 400)
    assert list(body["fields"]) == ["username"]
    body = error_of(raw(client, "post", "/api/auth/login", '{"username": "ann", "password": "\\u0000"}'), 400)
    assert list(body["fields"]) == ["password"]


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/organizations/R%00IO/records", "key"),
        ("/api/organizations/R%00IO", "key"),
        ("/api/organizations/RIO/records/P%001", "pfaId"),
        ("/api/organizations/RIO/records/P%001/draft", "pfaId"),
    ],
)
def test_a_nul_in_the_path_is_400_naming_it(ann, path, field):
    body = error_of(ann.get(path) if not path.endswith("draft") else ann.delete(path), 400)
    assert list(body["fields"]) == [field]


def test_a_nul_in_a_query_value_is_400_naming_it(ann):
    body = error_of(ann.get("/api/organizations/RIO/records?category=CR%00ANE"), 400)
    assert list(body["fields"]) == ["category"]


def _cursor(*parts) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


def _encoded(text: bytes) -> str:
    return base64.urlsafe_b64encode(text).decode().rstrip("=")


@pytest.mark.parametrize(
    ("ordering", "cursor"),
    [
        ("pfaId", _cursor("pfaId", "P1", "P\u00001")),  # a NUL in the pfa_id
        ("pfaId", _cursor("manufacturer", "P1", "P1")),  # not made for this ordering
        ("monthlyRate", _cursor("monthlyRate", 1e300, "P1")),  # not as written: amounts are strings
        ("monthlyRate", _cursor("monthlyRate", "1e999999", "P1")),  # overflows the column
        ("monthlyRate", _cursor("monthlyRate", "NaN", "P1")),
        ("forecastEndDate", _cursor("forecastEndDate", "2027-02-30", "P1")),
        ("pemsLastModified", _cursor("pemsLastModified", "2027-02-01T10:00:00", "P1")),  # no zone
        ("pfaId", _cursor("pfaId", "P1", "P" * 65)),  # longer than a key
        ("category", _cursor("category", "CR\u0000", "P1")),
        ("monthlyRate", _encoded(b'["monthlyRate", 1e999999, "P1"]')),
        ("pfaId", _encoded(b'["pfaId", "P1", "\\ud800"]')),
        ("pfaId", _encoded(b"[" * 700)),
    ],
    ids=lambda value: value[:40] if isinstance(value, str) else value,
)
def test_a_forged_or_overflowing_cursor_is_400_naming_it(ann, ordering, cursor):
    response = ann.get("/api/organizations/RIO/records", {"cursor": cursor, "ordering": ordering})
    body = error_of(response, 400)
    assert list(body["fields"]) == ["cursor"]


def test_a_real_cursor_still_pages(ann):
    for ordering in ("pfaId", "-monthlyRate", "forecastEndDate", "-pemsLastModified", "category"):
        first = ann.get("/api/organizations/RIO/records", {"limit": 2, "ordering": ordering})
        assert first.status_code == 200, first.content
        cursor = first.json()["nextCursor"]
        second = ann.get("/api/organizations/RIO/records", {"limit": 2, "ordering": ordering, "cursor": cursor})
        assert second.status_code == 200, second.content
        seen = [row["pfaId"] for row in first.json()["records"] + second.json()["records"]]
        assert sorted(seen) == ["P1", "P2", "P3"]


# --- Strict requests ------------------------------------------------------------------------------------


def test_a_misspelt_organization_in_a_trigger_is_400_and_syncs_nothing(ann):
    body = error_of(ann.post("/api/sync/trigger", {"organization_id": "RIO"}, format="json"), 400)
    assert set(body["fields"]) == {"organization_id"}
    message = body["fields"]["organization_id"][0]
    assert "organizationId" in message and "syncType" in message and "direction" in message
    assert not PfaSyncLog.objects.exists()


def test_a_trigger_without_an_organization_is_400_even_for_staff(rio):
    staff = user_with("root", "synclog.trigger_sync", is_staff=True)
    body = error_of(client_for(staff).post("/api/sync/trigger", {}, format="json"), 400)
    assert list(body["fields"]) == ["organizationId"]
    assert not PfaSyncLog.objects.exists()


def test_every_organization_is_asked_for_explicitly_and_by_staff_only(rio, ann):
    error_of(ann.post("/api/sync/trigger", {"organizationId": "*"}, format="json"), 403, "FORBIDDEN")
    assert not PfaSyncLog.objects.exists()
    staff = user_with("root", "synclog.trigger_sync", is_staff=True)
    response = client_for(staff).post("/api/sync/trigger", {"organizationId": "*"}, format="json")
    assert response.status_code == 202, response.content
    assert [log.organization.code for log in PfaSyncLog.objects.all()] == ["RIO"]


@pytest.mark.parametrize("query", ["page=2", "pageSize=100000", "categroy=CRANE", "limit=2&limit=3", "ordering="])
def test_an_unknown_or_repeated_query_parameter_is_400_naming_it(ann, query):
    body = error_of(ann.get(f"/api/organizations/RIO/records?{query}"), 400)
    name = query.split("=")[0]
    assert list(body["fields"]) == [name]
    if name not in ("limit", "ordering"):
        assert "category" in body["fields"][name][0] and "cursor" in body["fields"][name][0]


@pytest.mark.parametrize(
    "path",
    ["/api/organizations", "/api/organizations/RIO", "/api/organizations/RIO/kpis", "/api/sync/worker-status",
     RECORD, "/api/sync/status"],
)  # fmt: skip
def test_every_endpoint_refuses_an_unknown_query_parameter(ann, path):
    body = error_of(ann.get(path, {"verbose": "1"}), 400)
    assert list(body["fields"]) == ["verbose"]


def test_a_patch_refuses_snake_case_names(ann):
    body = error_of(ann.patch(RECORD, {"monthlyRate": "5200.00", "monthly_rate": "9.00"}, format="json"), 400)
    assert list(body["fields"]) == ["monthly_rate"]
    assert "monthlyRate" in body["fields"]["monthly_rate"][0]
    assert not PfaModification.objects.exists()


def test_a_patch_names_a_read_only_field_as_such(ann):
    body = error_of(ann.patch(RECORD, {"pfaId": "P9", "colour": "red"}, format="json"), 400)
    assert body["fields"]["pfaId"] == ["Cannot be edited: it is a key or PEMS bookkeeping."]
    assert "Unknown field" in body["fields"]["colour"][0]


def test_a_merge_refuses_snake_case_names(ann, planner, rio):
    conflict = PfaModification.objects.create(
        organization=rio, pfa_id="P1", author=planner, state="conflict", base_version=1
    )
    response = ann.post(
        f"/api/modifications/{conflict.pk}/resolve",
        {"resolution": "merge", "values": {"monthly_rate": "9.00"}},
        format="json",
    )
    body = error_of(response, 400)
    assert list(body["fields"]) == ["values"] and "monthly_rate" in body["fields"]["values"][0]
    conflict.refresh_from_db()
    assert conflict.state == "conflict"


@pytest.mark.parametrize(
    ("path", "payload", "unknown"),
    [
        ("/api/auth/login", {"username": "ann", "password": "pw", "remember": True}, "remember"),
        ("/api/auth/refresh", {"refresh": "x", "access": "y"}, "access"),
        ("/api/auth/logout", {"refresh": "x", "all": True}, "all"),
        ("/api/organizations/RIO/drafts/commit", {"pfa_ids": ["P1"]}, "pfa_ids"),
        ("/api/organizations/RIO/drafts/discard", {"ids": ["P1"]}, "ids"),
        ("/api/sync/trigger", {"organizationId": "RIO", "mode": "full"}, "mode"),
    ],
)
def test_every_body_refuses_unknown_keys_naming_them_and_the_accepted_ones(ann, path, payload, unknown):
    body = error_of(ann.post(path, payload, format="json"), 400)
    assert unknown in body["fields"]
    assert "accepted" in body["fields"][unknown][0]
    assert not PfaSyncLog.objects.exists()


# --- One wording per kind of error ---------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["soon", "2027-02-30", "2027-13-01", "02/01/2027", "2027-02-01T00:00:00"])
def test_a_bad_date_always_reads_the_same(ann, bad):
    body = error_of(ann.get("/api/organizations/RIO/records", {"forecastFrom": bad}), 400)
    assert body["fields"] == {"forecastFrom": ["Must be a date as YYYY-MM-DD."]}
    body = error_of(ann.patch(RECORD, {"forecastStartDate": bad}, format="json"), 400)
    assert body["fields"] == {"forecastStartDate": ["Must be a date as YYYY-MM-DD."]}


def test_a_date_that_is_not_a_string_reads_the_same(ann):
    body = error_of(
        ann.patch(RECORD, {"forecastStartDate": 20270201, "planEndDate": ["2027-02-01"]}, format="json"), 400
    )
    assert body["fields"] == {name: ["Must be a date as YYYY-MM-DD."] for name in ("forecastStartDate", "planEndDate")}


def test_a_bad_choice_lists_the_valid_ones(ann):
    body = error_of(ann.get("/api/organizations/RIO/records", {"state": "open"}), 400)
    assert body["fields"]["state"] == ['"open" is not a valid choice; valid: draft, committed, conflict.']
    body = error_of(ann.post("/api/sync/trigger", {"organizationId": "RIO", "direction": "up"}, format="json"), 400)
    assert body["fields"]["direction"] == ['"up" is not a valid choice; valid: read, write.']


def test_every_api_view_takes_the_strict_request_rules():
    from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

    from pfasync import api_urls
    from pfasync.api import NotFoundApi, StrictRequestMixin

    views = {pattern.callback.view_class for pattern in api_urls.urlpatterns}
    documentation = {NotFoundApi, SpectacularAPIView} | {v for v in views if issubclass(v, SpectacularSwaggerView)}
    assert len(views - documentation) >= 19
    assert all(issubclass(view, StrictRequestMixin) for view in views - documentation)


class _Request:
    META: dict = {}  # noqa: RUF012 (a stand-in: no Content-Length, as a chunked body has none)


def test_the_parser_reads_at_most_the_limit_whatever_the_declared_length(settings):
    from io import BytesIO

    from pfasync.parsers import BodyTooLarge, JsonParser

    settings.API_MAX_BODY_BYTES = 2048
    stream = BytesIO(b"[" + b"1," * 100_000 + b"1]")
    with pytest.raises(BodyTooLarge):
        JsonParser().parse(stream, "application/json", {"request": _Request()})
    assert stream.tell() == 2049  # one byte past the limit tells, and nothing more is read
