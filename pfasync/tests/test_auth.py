"""The API's sign-in (`pfasync.auth`): login, login throttling, rotating and revocable refresh
tokens, the JWT signing key, and who may read the schema and the docs."""

import os
import subprocess
import sys

import jwt
import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import Permission, User
from django.test import Client
from rest_framework.test import APIClient

from mirror.tests.factories import OrganizationFactory

pytestmark = pytest.mark.django_db

PASSWORD = "pw-Long-enough-1"


@pytest.fixture
def ana():
    return User.objects.create_user("ana", password=PASSWORD)


@pytest.fixture
def ana_of_rio(ana):
    """Ana, a member of RIO who may start syncs."""
    ana.organizations.set([OrganizationFactory(code="RIO")])
    ana.user_permissions.add(Permission.objects.get(content_type__app_label="synclog", codename="trigger_sync"))
    return ana


def login(username: str, password: str, **request):
    return APIClient().post("/api/auth/login", {"username": username, "password": password}, format="json", **request)


def refresh(token: str):
    return APIClient().post("/api/auth/refresh", {"refresh": token}, format="json")


def assert_error(response, status_code: int, code: str) -> dict:
    assert response.status_code == status_code, response.content
    body = response.json()
    assert body["success"] is False and body["error"] == code and body["message"], body
    return body


# --- login, refresh -------------------------------------------------------------------------------


def test_login_returns_tokens_and_the_user_with_their_organizations(ana_of_rio):
    response = APIClient().post("/api/auth/login", {"username": "ana", "password": PASSWORD}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert set(body) >= {"access", "refresh", "user"}
    assert body["user"] == {
        "id": ana_of_rio.id,
        "username": "ana",
        "isStaff": False,
        "isSuperuser": False,
        "canEdit": False,
        "canResolve": False,
        "canTriggerSync": True,
        "organizations": ["RIO"],
    }
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {body['access']}")
    assert client.get("/api/organizations").status_code == 200
    refreshed = APIClient().post("/api/auth/refresh", {"refresh": body["refresh"]}, format="json")
    assert refreshed.status_code == 200 and refreshed.json()["access"]


def test_login_with_a_wrong_password_is_401(ana):
    response = APIClient().post("/api/auth/login", {"username": "ana", "password": "nope"}, format="json")
    assert_error(response, 401, "UNAUTHORIZED")


def test_login_without_password_is_400_naming_it():
    body = assert_error(
        APIClient().post("/api/auth/login", {"username": "ana"}, format="json"), 400, "VALIDATION_ERROR"
    )
    assert set(body["fields"]) == {"password"} and "password" in body["message"]


def test_refresh_with_a_bad_token_is_401():
    assert_error(APIClient().post("/api/auth/refresh", {"refresh": "garbage"}, format="json"), 401, "TOKEN_INVALID")


# --- login throttling -----------------------------------------------------------------------------


def test_failed_logins_are_throttled_per_username_with_retry_after(ana):
    for _ in range(5):  # LOGIN_THROTTLE_RATE: 5/min
        assert_error(login("ana", "wrong"), 401, "UNAUTHORIZED")
    throttled = login("ana", PASSWORD)  # even the right password waits now
    assert_error(throttled, 429, "THROTTLED")
    assert 0 < int(throttled["Retry-After"]) <= 60
    assert_error(login("ANA ", "wrong"), 429, "THROTTLED")  # one bucket, whatever the case or spaces
    User.objects.create_user("bob", password=PASSWORD)
    assert login("bob", PASSWORD).status_code == 200  # another user from the same address is not held up


def test_failed_logins_of_one_username_count_from_every_address(ana):
    for n in range(5):
        assert_error(login("ana", "wrong", REMOTE_ADDR=f"10.0.0.{n}"), 401, "UNAUTHORIZED")
    assert_error(login("ana", PASSWORD, REMOTE_ADDR="10.0.0.99"), 429, "THROTTLED")


def test_failed_logins_are_throttled_per_address_whatever_username_or_forwarded_for(ana):
    for n in range(20):  # LOGIN_ADDRESS_THROTTLE_RATE: 20/min; X-Forwarded-For is not trusted (API_NUM_PROXIES=0)
        response = login(f"guess{n}", "wrong", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}")
        assert_error(response, 401, "UNAUTHORIZED")
    assert_error(login("ana", PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.200"), 429, "THROTTLED")
    assert login("ana", PASSWORD, REMOTE_ADDR="10.9.9.9").status_code == 200  # another address


def test_successful_logins_are_not_counted(ana):
    for _ in range(8):
        assert login("ana", PASSWORD).status_code == 200
    for _ in range(4):
        assert_error(login("ana", "wrong"), 401, "UNAUTHORIZED")
    assert login("ana", PASSWORD).status_code == 200


# --- refresh tokens -------------------------------------------------------------------------------


def test_refresh_rotates_and_a_used_refresh_token_is_refused(ana):
    first = login("ana", PASSWORD).json()["refresh"]
    rotated = refresh(first)
    assert rotated.status_code == 200, rotated.content
    second = rotated.json()["refresh"]
    assert second != first and rotated.json()["access"]
    assert_error(refresh(first), 401, "TOKEN_INVALID")  # spent
    assert refresh(second).status_code == 200


def test_logout_revokes_the_refresh_token(ana):
    tokens = login("ana", PASSWORD).json()
    response = APIClient().post("/api/auth/logout", {"refresh": tokens["refresh"]}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["success"] is True
    assert_error(refresh(tokens["refresh"]), 401, "TOKEN_INVALID")
    again = APIClient().post("/api/auth/logout", {"refresh": tokens["refresh"]}, format="json")
    assert_error(again, 401, "TOKEN_INVALID")
    assert_error(APIClient().post("/api/auth/logout", {"refresh": "garbage"}, format="json"), 401, "TOKEN_INVALID")
    body = assert_error(APIClient().post("/api/auth/logout", {}, format="json"), 400, "VALIDATION_ERROR")
    assert list(body["fields"]) == ["refresh"]


@pytest.mark.parametrize("gone", ["deleted", "inactive"])
def test_tokens_of_a_deleted_or_inactive_user_are_401(ana, gone):
    tokens = login("ana", PASSWORD).json()
    if gone == "deleted":
        ana.delete()
    else:
        ana.is_active = False
        ana.save()
    assert_error(refresh(tokens["refresh"]), 401, "TOKEN_INVALID")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    assert_error(client.get("/api/organizations"), 401, "TOKEN_INVALID")


# --- me, and telling an expired token from a bad one ---------------------------------------------


def bearer(access: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client


def test_me_says_who_the_user_is_what_they_may_do_and_what_they_see(ana_of_rio):
    OrganizationFactory(code="HOU")  # not ana's
    ana_of_rio.user_permissions.add(Permission.objects.get(codename="edit_pfa_records"))
    body = bearer(login("ana", PASSWORD).json()["access"]).get("/api/auth/me").json()
    assert body == {
        "success": True,
        "user": {
            "id": ana_of_rio.id,
            "username": "ana",
            "isStaff": False,
            "isSuperuser": False,
            "canEdit": True,
            "canResolve": True,
            "canTriggerSync": True,
            "organizations": ["RIO"],
        },
    }


def test_me_of_a_user_without_permissions_and_of_staff(ana, admin_user):
    OrganizationFactory(code="RIO")
    OrganizationFactory(code="HOU")
    user = bearer(login("ana", PASSWORD).json()["access"]).get("/api/auth/me").json()["user"]
    assert (user["canEdit"], user["canResolve"], user["canTriggerSync"], user["organizations"]) == (
        False,
        False,
        False,
        [],
    )
    client = APIClient()
    client.force_authenticate(admin_user)
    user = client.get("/api/auth/me").json()["user"]
    assert (user["isStaff"], user["canEdit"], user["canTriggerSync"], user["organizations"]) == (
        True,
        True,
        True,
        ["HOU", "RIO"],
    )
    assert_error(APIClient().get("/api/auth/me"), 401, "UNAUTHORIZED")


def _token(user, *, expired: bool, key: str | None = None) -> str:
    from rest_framework_simplejwt.tokens import AccessToken

    token = AccessToken.for_user(user)
    if expired:
        token.set_exp(lifetime=-django_settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"])
    if key is None:
        return str(token)
    return jwt.encode(token.payload, key, algorithm="HS256")  # signed with another key: forged


def test_an_expired_access_token_is_token_expired_and_a_forged_one_token_invalid(ana):
    assert_error(bearer(_token(ana, expired=True)).get("/api/auth/me"), 401, "TOKEN_EXPIRED")
    forged = "a-different-key-that-is-long-enough-for-hs256!"
    assert_error(bearer(_token(ana, expired=False, key=forged)).get("/api/auth/me"), 401, "TOKEN_INVALID")
    assert_error(bearer(_token(ana, expired=True, key=forged)).get("/api/auth/me"), 401, "TOKEN_INVALID")
    assert_error(bearer("not-a-jwt").get("/api/auth/me"), 401, "TOKEN_INVALID")
    assert bearer(_token(ana, expired=False)).get("/api/auth/me").status_code == 200


def test_an_expired_refresh_token_is_token_expired(ana):
    from rest_framework_simplejwt.tokens import RefreshToken

    token = RefreshToken.for_user(ana)
    token.set_exp(lifetime=-django_settings.SIMPLE_JWT["REFRESH_TOKEN_LIFETIME"])
    assert_error(refresh(str(token)), 401, "TOKEN_EXPIRED")


# --- the signing key ------------------------------------------------------------------------------


def test_tokens_are_signed_with_the_jwt_signing_key_not_the_secret_key(ana):
    access = login("ana", PASSWORD).json()["access"]
    assert django_settings.SIMPLE_JWT["SIGNING_KEY"] != django_settings.SECRET_KEY
    assert jwt.decode(access, django_settings.SIMPLE_JWT["SIGNING_KEY"], algorithms=["HS256"])["user_id"]
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(access, django_settings.SECRET_KEY, algorithms=["HS256"])


def load_settings(**environment: str) -> subprocess.CompletedProcess:
    """Import the settings in a fresh interpreter with `environment` over this one's (an empty value
    also hides what a local .env says)."""
    return subprocess.run(
        [sys.executable, "-c", "import pfasync.settings as s; print(s.SIMPLE_JWT['SIGNING_KEY'])"],
        cwd=django_settings.BASE_DIR,
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("environment", "error"),
    [
        ({"JWT_SIGNING_KEY": "", "DJANGO_DEBUG": "false"}, "JWT_SIGNING_KEY is not set"),
        ({"JWT_SIGNING_KEY": "too-short", "DJANGO_DEBUG": "false"}, "JWT_SIGNING_KEY must be at least 32 characters"),
        ({"JWT_SIGNING_KEY": "s" * 40, "DJANGO_SECRET_KEY": "s" * 40}, "differ from DJANGO_SECRET_KEY"),
        ({"LOGIN_THROTTLE_RATE": "5 per minute"}, "LOGIN_THROTTLE_RATE is '5 per minute'"),
    ],
)
def test_a_missing_or_weak_jwt_signing_key_stops_start_up_naming_it(environment, error):
    started = load_settings(**environment)
    assert started.returncode != 0 and error in started.stderr, started.stderr


def test_the_jwt_signing_key_comes_from_the_environment_and_is_optional_in_debug():
    key = "k" * 48
    assert load_settings(JWT_SIGNING_KEY=key).stdout.strip() == key
    debug = load_settings(JWT_SIGNING_KEY="", DJANGO_DEBUG="true")
    assert debug.returncode == 0, debug.stderr
    assert debug.stdout.strip() and debug.stdout.strip() != os.environ.get("DJANGO_SECRET_KEY")


# --- schema and docs ------------------------------------------------------------------------------


def test_schema_and_docs_need_a_signed_in_user(ana, admin_user):
    assert_error(APIClient().get("/api/schema/", {"format": "json"}), 401, "UNAUTHORIZED")
    docs = Client().get("/api/docs/")
    assert docs.status_code == 302 and docs["Location"].startswith("/admin/login/?next=/api/docs/")
    bearer = APIClient()
    bearer.credentials(HTTP_AUTHORIZATION=f"Bearer {login('ana', PASSWORD).json()['access']}")
    assert bearer.get("/api/schema/", {"format": "json"}).status_code == 200
    assert bearer.get("/api/docs/").status_code == 200
    session = Client()
    session.force_login(admin_user)
    assert session.get("/api/schema/", {"format": "json"}).status_code == 200
    assert session.get("/api/docs/").status_code == 200


def test_api_docs_public_opens_schema_and_docs(settings):
    settings.API_DOCS_PUBLIC = True
    assert APIClient().get("/api/schema/", {"format": "json"}).status_code == 200
    assert Client().get("/api/docs/").status_code == 200
