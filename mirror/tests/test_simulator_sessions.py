"""The simulator's authentication and sessions (`mirror.simulator.sessions`)."""

from __future__ import annotations

import pytest

from mirror.simulator import DEFAULT_API_KEY, DEFAULT_TENANT, NO_SESSION_EXCEPTION
from mirror.tests.simulator_requests import basic, body, error_of, headers, post

# --- headers, auth and sessions --------------------------------------------------------------------


def test_basic_auth_and_api_key_both_work(http, server):
    assert post(http, server, body(rows=1)).status_code == 200
    hdrs = {"TENANT": DEFAULT_TENANT, "Organization": "RIO", "x-api-key": DEFAULT_API_KEY}
    response = post(http, server, body(rows=1), hdrs=hdrs)
    assert response.status_code == 200
    assert response.headers["Date"] and int(response.headers["Content-Length"]) == len(response.content)


@pytest.mark.parametrize("status", [401, 400, 500])
def test_bad_credentials(http, server, sim, status):
    if status != 401:
        sim.set_auth_failure_status(status)
    response = post(http, server, body(), Authorization=basic(password="wrong"))
    assert response.status_code == status
    assert "authentication" in error_of(response)["Message"].lower()
    no_key = {"tenant": DEFAULT_TENANT, "organization": "RIO", "X-API-KEY": "nope"}
    assert post(http, server, body(), hdrs=no_key).status_code == status


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"tenant": "OTHER"}, "OTHER"),
        ({"tenant": ""}, "tenant"),
        ({"organization": "XYZ"}, "XYZ"),
        ({"organization": ""}, "organization"),
    ],
)
def test_tenant_and_organization_are_checked(http, server, changes, named):
    response = post(http, server, body(), hdrs={**headers(), **changes})
    assert response.status_code == 400
    assert named in error_of(response)["Message"]


def test_keepsession_then_sessionid_then_expiry(http, server, sim):
    response = post(http, server, body(rows=1), keepsession="true")
    session_id = response.json()["Result"]["SessionID"]
    assert session_id
    without_credentials = {"tenant": DEFAULT_TENANT, "organization": "RIO", "sessionid": session_id}
    assert post(http, server, body(rows=1), hdrs=without_credentials).status_code == 200
    assert post(http, server, body(rows=1), hdrs={**without_credentials, "sessionid": "forged"}).status_code == 400
    sim.expire_sessions()
    expired = post(http, server, body(rows=1), hdrs=without_credentials)
    assert expired.status_code == 400
    assert error_of(expired)["Name"] == NO_SESSION_EXCEPTION


def test_request_log_masks_secrets(http, server, sim):
    post(http, server, body(rows=1))
    post(
        http, server, body(rows=1), hdrs={"tenant": DEFAULT_TENANT, "organization": "RIO", "X-API-KEY": DEFAULT_API_KEY}
    )
    first, second = sim.requests[-2:]
    assert first["headers"]["authorization"] == "***" and second["headers"]["x-api-key"] == "***"
    assert first["json"]["REQUEST_TYPE"] == "LIST.DATA_ONLY.STORED" and first["status"] == 200
    assert sim.request_count("/grids") == 2
