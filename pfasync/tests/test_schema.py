"""Property-based API test: every operation of the published OpenAPI schema, as a staff user, over HTTP.

Schemathesis generates requests from /api/schema/ and checks that no answer is a server error and
that every answer matches the schema's declared response shape.
"""

import pytest
import schemathesis
from django.contrib.auth.models import User
from hypothesis import HealthCheck, settings
from rest_framework_simplejwt.tokens import RefreshToken
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from mirror.tests.factories import ApiConfigurationFactory, OrganizationFactory


@pytest.fixture
def access_token(transactional_db) -> str:
    staff = User.objects.create_superuser("schema", password="pw")
    ApiConfigurationFactory(organization=OrganizationFactory(code="RIO"))
    return str(RefreshToken.for_user(staff).access_token)


@pytest.fixture
def api_schema(live_server, access_token):
    # The schema needs a signed-in user (API_DOCS_PUBLIC is off).
    return schemathesis.openapi.from_url(
        f"{live_server.url}/api/schema/?format=json", headers={"Authorization": f"Bearer {access_token}"}
    )


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much, HealthCheck.too_slow],
)
def test_api_answers_match_the_schema(case, access_token, live_server):
    case.call_and_validate(
        base_url=live_server.url,
        headers={"Authorization": f"Bearer {access_token}"},
        checks=[not_a_server_error, response_schema_conformance],
    )


# --- every test client's answer is checked against the schema (conftest.py) -------------------------


def answer(path: str, status: int, body, method: str = "GET"):
    from django.http import JsonResponse

    response = JsonResponse(body, status=status, safe=False)
    response.request = {"PATH_INFO": path, "REQUEST_METHOD": method}
    return response


ME = {
    "id": 1,
    "username": "ann",
    "isStaff": False,
    "isSuperuser": False,
    "canEdit": True,
    "canResolve": True,
    "canTriggerSync": False,
    "organizations": ["RIO"],
}


@pytest.mark.parametrize(
    ("response", "complaint"),
    [
        (answer("/api/auth/me", 200, {"success": True, "user": {**ME, "colour": "red"}}), "colour"),
        (answer("/api/auth/me", 200, {"success": True, "user": {**ME, "canEdit": "yes"}}), "canEdit"),
        (answer("/api/auth/me", 200, {"success": True}), "user"),
        (answer("/api/auth/me", 409, {"success": False, "error": "CONFLICT", "message": "x"}), "409"),
        (
            answer(
                "/api/organizations/RIO/records/P1",
                400,
                {"success": False, "error": "VALIDATION_ERROR", "message": "x", "fields": {"monthly_rate": ["x"]}},
                "PATCH",
            ),
            "monthly_rate",
        ),
    ],
)
def test_an_answer_unlike_its_schema_fails_the_test(response, complaint):
    from pfasync.tests.schema_check import api_answer_check

    with pytest.raises(AssertionError, match=complaint):
        api_answer_check(response)


def test_answers_as_documented_and_undocumented_paths_pass():
    from pfasync.tests.schema_check import api_answer_check

    api_answer_check(answer("/api/auth/me", 200, {"success": True, "user": ME}))
    api_answer_check(answer("/api/auth/me", 401, {"success": False, "error": "TOKEN_EXPIRED", "message": "x"}))
    api_answer_check(answer("/api/no/such/path", 404, {"anything": True}))
