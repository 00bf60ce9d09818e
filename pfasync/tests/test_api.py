"""The project-wide API pieces (`pfasync.api`): every error in the one JSON shape, a token on every
endpoint, the JSON 404, and the schema and docs pages."""

import re
import uuid

import pytest
from django.test import Client
from rest_framework.test import APIClient

from mirror.tests.factories import OrganizationFactory, user_with

pytestmark = pytest.mark.django_db


@pytest.fixture
def rio_user():
    return user_with("ana", "synclog.trigger_sync", organizations=[OrganizationFactory(code="RIO")])


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def assert_error(response, status_code: int, code: str) -> dict:
    assert response.status_code == status_code, response.content
    body = response.json()
    assert body["success"] is False and body["error"] == code and body["message"], body
    return body


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/api/sync/trigger"),
        ("get", "/api/sync/status"),
        ("get", f"/api/sync/status/{uuid.uuid4()}"),
        ("post", f"/api/sync/cancel/{uuid.uuid4()}"),
        ("get", "/api/sync/worker-status"),
        ("get", "/api/organizations"),
        ("post", "/api/organizations"),
        ("get", "/api/organizations/RIO"),
        ("patch", "/api/organizations/RIO"),
        ("get", "/api/organizations/RIO/connection"),
        ("put", "/api/organizations/RIO/connection"),
    ],
)
def test_every_endpoint_needs_a_token(method, path):
    response = getattr(APIClient(), method)(path, {}, format="json")
    assert_error(response, 401, "UNAUTHORIZED")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_an_invalid_token_is_401():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer not-a-jwt")
    assert_error(client.get("/api/sync/status"), 401, "TOKEN_INVALID")


def test_unknown_api_path_is_a_json_404():
    assert_error(APIClient().get("/api/nothing/here"), 404, "NOT_FOUND")


def test_malformed_json_is_400(rio_user):
    response = client_for(rio_user).post("/api/sync/trigger", "{not json", content_type="application/json")
    assert_error(response, 400, "MALFORMED_REQUEST")


def test_wrong_method_is_405(rio_user):
    assert_error(client_for(rio_user).delete("/api/sync/trigger"), 405, "METHOD_NOT_ALLOWED")


def test_schema_and_docs_are_served(rio_user):
    schema = client_for(rio_user).get("/api/schema/", {"format": "json"})
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {
        "/api/sync/trigger",
        "/api/sync/status",
        "/api/sync/status/{key}",
        "/api/sync/cancel/{log_id}",
        "/api/auth/logout",
        "/api/organizations",
    } <= set(paths)
    assert set(paths["/api/sync/trigger"]["post"]["responses"]) == {
        "202",
        "400",
        "401",
        "403",
        "404",
        "409",
        "413",
        "503",
    }
    assert set(paths["/api/sync/cancel/{log_id}"]["post"]["responses"]) == {"202", "400", "401", "403", "404", "409"}
    assert "429" in paths["/api/auth/login"]["post"]["responses"]
    components = schema.json()["components"]["schemas"]
    assert components["SyncTriggerInput"]["properties"]["allowMassDelete"]["type"] == "boolean"
    assert set(components["Worker"]["properties"]["fullSync"]["allOf"][0].values()) == {
        "#/components/schemas/FullSyncSchedule"
    }
    assert set(components["FullSyncSchedule"]["properties"]) == {"enabled", "nextRun", "interval"}
    docs = client_for(rio_user).get("/api/docs/")
    assert docs.status_code == 200
    assert b"/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in docs.content
    assert b"jsdelivr" not in docs.content  # no CDN: the page must work offline
    for script in re.findall(rb'src="(/static/[^"]+)"', docs.content):
        assert Client().get(script.decode()).status_code == 200, script  # served by the app itself


# --- CORS: browser front ends on other origins ------------------------------------------------------

FRONT_END = "http://localhost:5173"


def preflight(client: APIClient, path: str, origin: str):
    return client.options(
        path,
        HTTP_ORIGIN=origin,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type",
    )


def test_a_preflight_from_an_allowed_origin_is_answered_without_a_login(settings):
    settings.CORS_ALLOWED_ORIGINS = [FRONT_END]
    response = preflight(APIClient(), "/api/organizations/RIO/records", FRONT_END)
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == FRONT_END
    assert "authorization" in response["Access-Control-Allow-Headers"].lower()
    assert "GET" in response["Access-Control-Allow-Methods"]


def test_answers_to_an_allowed_origin_carry_cors_headers_and_others_none(settings, django_user_model):
    settings.CORS_ALLOWED_ORIGINS = [FRONT_END]
    client = APIClient()
    client.force_authenticate(django_user_model.objects.create_user("ana"))
    assert client.get("/api/organizations", HTTP_ORIGIN=FRONT_END)["Access-Control-Allow-Origin"] == FRONT_END
    assert "Access-Control-Allow-Origin" not in client.get("/api/organizations", HTTP_ORIGIN="http://evil.example")
    assert "Access-Control-Allow-Origin" not in preflight(APIClient(), "/api/auth/me", "http://evil.example")


def test_no_origin_is_allowed_when_none_is_configured(settings):
    settings.CORS_ALLOWED_ORIGINS = []
    assert "Access-Control-Allow-Origin" not in preflight(APIClient(), "/api/auth/me", FRONT_END)


def test_docs_name_every_error_code_the_api_answers():
    from pathlib import Path

    from django.conf import settings

    root = Path(settings.BASE_DIR)
    sources = [root / "pfasync" / "api.py", *root.glob("*/api.py"), *root.glob("*/records_api.py")]
    codes = set()
    for source in sources:
        text = source.read_text()
        codes |= set(re.findall(r'error="([A-Z_]+)"', text)) | set(
            re.findall(r'(?:return |: )"([A-Z][A-Z_]{4,})"', text)
        )
    assert {"VALIDATION_ERROR", "TOKEN_EXPIRED", "SYNC_IN_PROGRESS", "NOT_IN_CONFLICT", "SERVER_ERROR"} <= codes
    documented = set(re.findall(r"`([A-Z][A-Z_]{4,})`", (root / "docs" / "api.md").read_text()))
    assert sorted(codes - documented) == []


def test_docs_name_every_field_the_api_answers():
    from pathlib import Path

    from django.conf import settings
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    names = {name for component in schema["components"]["schemas"].values() for name in component.get("properties", {})}
    assert {"canEdit", "conflictIds", "total", "logIds", "lastRuns", "recordsWritten"} <= names
    documented = (Path(settings.BASE_DIR) / "docs" / "api.md").read_text()
    missing = sorted(name for name in names if not re.search(rf'[`"]{re.escape(name)}[`"]', documented))
    assert missing == []
