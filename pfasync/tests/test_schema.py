"""Property-based API tests: every operation of the published OpenAPI schema, as a staff user, over HTTP.

Schemathesis generates requests from /api/schema/, both valid ones and ones that break the schema
(arbitrary bodies, path values and query strings, NUL characters included), and checks that no
answer is a server error, that every error answer has the one error shape, that answers match the
schema's declared shapes, that a request breaking the schema is refused (the API is strict: unknown
keys and parameters, wrong types), and that a refused request changed nothing: the mirror, the modifications
and the runs are as before.

A short run is part of `make test`; API_FUZZ_EXAMPLES raises the examples per operation and mode
for a longer one (docs/development.md).
"""

import hashlib
import json
import os
import re

import pytest
import schemathesis
from django.contrib.auth.models import User
from hypothesis import HealthCheck, settings
from rest_framework_simplejwt.tokens import RefreshToken
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import negative_data_rejection, response_schema_conformance

from mirror.models import PfaMirror, PfaModification
from mirror.tests.factories import ApiConfigurationFactory, OrganizationFactory, mirror_record
from synclog.models import PfaSyncLog
from synclog.tests.factories import PfaSyncLogFactory

FUZZ_EXAMPLES = int(os.environ.get("API_FUZZ_EXAMPLES", "15"))
# Schemathesis's coverage phase (boundary and schema-breaking values for every parameter, hundreds of
# requests whatever the examples) runs when asked: it takes minutes, not seconds.
FUZZ_COVERAGE = os.environ.get("API_FUZZ_COVERAGE", "").lower() in ("1", "true", "yes")
ERROR_CODE = re.compile(r"^[A-Z][A-Z_]*$")


@pytest.fixture
def world(transactional_db) -> dict:
    """A superuser (its access token), and an organization with records, a draft, a conflict and a
    run to aim at: path parameters take these values most of the time, so requests reach the views
    behind the lookups rather than stopping at a 404."""
    staff = User.objects.create_superuser("schema", password="pw")
    rio = ApiConfigurationFactory(organization=OrganizationFactory(code="RIO")).organization
    for n in range(1, 4):
        mirror_record(rio, f"P{n}")
    draft = PfaModification.objects.create(
        organization=rio, pfa_id="P1", author=staff, state="draft", base_version=1, changes={"manufacturer": "CAT"}
    )
    conflict = PfaModification.objects.create(
        organization=rio, pfa_id="P2", author=staff, state="conflict", base_version=1
    )
    run = PfaSyncLogFactory(organization=rio, status="completed")
    return {
        "token": str(RefreshToken.for_user(staff).access_token),
        "key": ["RIO", str(rio.pk)],
        "pfa_id": ["P1", "P2", "P3"],
        "modification_id": [conflict.pk, draft.pk],
        "log_id": [str(run.pk)],
        "run_key": [str(run.pk), str(run.batch_id)],
    }


@pytest.fixture
def access_token(world) -> str:
    return world["token"]


@pytest.fixture
def api_schema(live_server, world):
    known = {name: world[name] for name in ("key", "pfa_id", "modification_id", "log_id")}
    config = schemathesis.Config.from_dict(
        {
            "dictionaries": {name: {"values": values} for name, values in known.items()},
            "parameters": {f"path.{name}": {"dictionary": name, "probability": 0.8} for name in known},
        }
    )
    # The schema needs a signed-in user (API_DOCS_PUBLIC is off).
    schema = schemathesis.openapi.from_url(
        f"{live_server.url}/api/schema/?format=json",
        headers={"Authorization": f"Bearer {world['token']}"},
        config=config,
    )
    schema.config.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], allow_x00=True, allow_extra_parameters=True
    )
    schema.config.phases.coverage.enabled = FUZZ_COVERAGE
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


def state_digest() -> str:
    """The mirror, the modifications and the runs, as one digest."""
    rows = [
        list(PfaMirror.objects.order_by("pk").values_list()),
        list(PfaModification.objects.order_by("pk").values_list()),
        list(PfaSyncLog.objects.order_by("pk").values_list()),
    ]
    return hashlib.sha256(json.dumps(rows, default=str, sort_keys=True).encode()).hexdigest()


def assert_error_shape(response) -> None:
    """An error answers {"success": false, "error": CODE, "message": text} (and `fields` for a 400)."""
    if response.status_code < 400:
        return
    body = response.json()
    assert isinstance(body, dict), body
    assert body.get("success") is False, body
    assert isinstance(body.get("error"), str) and ERROR_CODE.match(body["error"]), body
    assert isinstance(body.get("message"), str) and body["message"], body
    if "fields" in body:
        assert isinstance(body["fields"], dict) and body["fields"], body
        for messages in body["fields"].values():
            assert isinstance(messages, list) and all(isinstance(m, str) and m for m in messages), body


def assert_refused_unchanged(case, response, name: str) -> None:
    assert response.status_code == 400, f"{case.method} {case.path}: {name} was not refused: {response.status_code}"
    assert_error_shape(response)
    assert name in response.json()["fields"], response.json()


@schema.parametrize()
@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_answers_no_5xx_errors_in_shape_and_refusals_change_nothing(case, access_token, live_server):
    headers = {"Authorization": f"Bearer {access_token}"}
    before = state_digest()
    response = case.call(base_url=live_server.url, headers=headers)
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance, negative_data_rejection])
    assert_error_shape(response)
    if response.status_code >= 400:
        assert state_digest() == before, f"{case.method} {case.path} answered {response.status_code} but changed state"
        return
    if case.method.upper() != case.operation.method.upper():
        return  # the coverage phase's undocumented methods (OPTIONS reads no body)
    # Accepted: the same request with a query parameter or a body key nobody declared is refused, naming
    # it, and changes nothing (the schema cannot say "no other parameters"; the fuzzer sends none).
    before = state_digest()
    extra = case.call(base_url=live_server.url, headers=headers, params={"fuzzExtra": "1"})
    assert_refused_unchanged(case, extra, "fuzzExtra")
    if isinstance(case.body, dict):
        case.body = {**case.body, "fuzzExtra": 1}
        extra = case.call(base_url=live_server.url, headers=headers)
        assert_refused_unchanged(case, extra, "fuzzExtra")
    assert state_digest() == before, f"{case.method} {case.path}: a refused request changed state"


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
