"""Hardening: secrets never leak (scrubbed errors and logs, refused where they are saved, asked for
again when a connection moves), http:// refused, organization codes validated, key rotation and the
deployment settings."""

import base64
import io
import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from mirror.models import ApiConfiguration, Organization
from mirror.pems import PemsClient, PemsError, PemsSettings
from mirror.secrets import SecretScrubFilter, secret_register, secrets_scrub
from mirror.services import organization_create, read_connection_put
from mirror.tests.factories import (
    CONNECTION_PERMISSIONS,
    STAFF_PERMISSIONS,
    ApiConfigurationFactory,
    OrganizationFactory,
    staff_user,
)

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "k3y-Never-Shown-7731"


# --- the scrubber ---------------------------------------------------------------------------------


def test_an_api_key_with_a_trailing_newline_never_reaches_an_error_or_a_log(caplog):
    """requests refuses the header and quotes it; the client turns that into a scrubbed PemsError."""
    settings = PemsSettings(
        base_url="http://127.0.0.1:1", tenant="T", organization="RIO", auth_type="api_key", secret=API_KEY + "\n"
    )
    with caplog.at_level(logging.DEBUG), PemsClient(settings, sleep=lambda seconds: None) as client:
        with pytest.raises(PemsError) as caught:
            client.count()
        logging.getLogger("mirror.pems").error("Sync failed: %s", caught.value)
    texts = [str(caught.value), repr(caught.value), caught.value.message, caplog.text]
    for text in texts:
        assert API_KEY not in text
    assert "could not be sent" in str(caught.value) and "***" in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_every_form_of_a_registered_secret_is_scrubbed():
    password = "p@ss w/rd+Secret=9"
    token = base64.b64encode(f"reader:{password}".encode()).decode()
    secret_register(password, token)
    text = (
        f"raw {password}; header Basic {token}; quoted p%40ss%20w%2Frd%2BSecret%3D9; "
        f"form p%40ss+w%2Frd%2BSecret%3D9; repr {password!r}"
    )
    scrubbed = secrets_scrub(text)
    assert "Secret" not in scrubbed and token not in scrubbed
    assert scrubbed.count("***") == 5
    assert secrets_scrub("nothing to hide") == "nothing to hide"


def test_the_console_log_filter_scrubs_messages_arguments_and_tracebacks():
    """The console handler of settings.LOGGING, which every logger's records reach."""
    (console,) = [handler for handler in logging.getLogger().handlers if getattr(handler, "name", "") == "console"]
    secret_register("filter-Secret-5521")
    logger = logging.getLogger("mirror.tests.hardening")
    written = io.StringIO()
    stream = console.setStream(written)
    try:
        logger.warning("connecting with %s", "filter-Secret-5521")
        try:
            raise ValueError("bad header: filter-Secret-5521")
        except ValueError:
            logger.exception("request failed")
    finally:
        console.setStream(stream)
    assert "connecting with ***" in written.getvalue() and "bad header: ***" in written.getvalue()
    assert "filter-Secret-5521" not in written.getvalue()


def test_the_filter_leaves_records_without_a_secret_alone():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "read %d rows of %s", (5, "RIO"), None)
    assert SecretScrubFilter().filter(record) and record.getMessage() == "read 5 rows of RIO"


# --- secrets refused where they are saved ---------------------------------------------------------


@pytest.fixture
def staff():
    return staff_user("boss", *STAFF_PERMISSIONS, *CONNECTION_PERMISSIONS)


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


CONNECTION = {
    "baseUrl": "https://eam.example.com",
    "tenant": "ACME",
    "username": "reader",
    "secret": API_KEY,
    "timeZone": "America/Chicago",
}


@pytest.mark.parametrize("bad", [API_KEY + "\n", " " + API_KEY, API_KEY[:5] + "\t" + API_KEY[5:], API_KEY + "\x00"])
def test_a_secret_with_whitespace_or_control_characters_is_refused_without_echoing_it(bad):
    configuration = ApiConfiguration()
    with pytest.raises(ValidationError) as caught:
        configuration.set_secret(bad)
    assert "whitespace" in str(caught.value) and API_KEY[:8] not in str(caught.value)
    assert configuration.secret == ""


@pytest.mark.django_db
def test_the_api_refuses_such_a_secret_as_a_field_error(staff):
    OrganizationFactory(code="HOU")
    response = api(staff).put("/api/organizations/HOU/connection", {**CONNECTION, "secret": API_KEY + "\n"}, "json")
    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["secret"]
    assert API_KEY.encode() not in response.content
    assert not ApiConfiguration.objects.exists()


@pytest.mark.django_db
def test_the_command_refuses_such_a_secret_naming_the_variable(monkeypatch):
    monkeypatch.setenv("HOU_PEMS_KEY", API_KEY + "\n")
    with pytest.raises(CommandError) as caught:
        call_command(
            "add_organization", "HOU", "--name", "Houston", "--pems-url", "https://eam.example.com",
            "--tenant", "ACME", "--auth", "api_key", "--password-env", "HOU_PEMS_KEY", "--timezone", "UTC",
        )  # fmt: skip
    assert "HOU_PEMS_KEY" in str(caught.value) and "whitespace" in str(caught.value)
    assert API_KEY not in str(caught.value)
    assert not ApiConfiguration.objects.exists()


# --- a connection that moves needs its secret again -----------------------------------------------


@pytest.fixture
def hou():
    organization = OrganizationFactory(code="HOU")
    read_connection_put(organization=organization, secret=API_KEY, **_fields(CONNECTION))
    return organization


def _fields(connection: dict) -> dict:
    names = {"baseUrl": "base_url", "timeZone": "time_zone", "authType": "auth_type"}
    return {names.get(key, key): value for key, value in connection.items() if key != "secret"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"baseUrl": "https://attacker.example.net"}, "base URL"),
        ({"tenant": "OTHER"}, "tenant"),
        ({"username": "someone-else"}, "username"),
        ({"authType": "api_key"}, "authentication type"),
    ],
)
def test_changing_where_the_secret_goes_needs_the_secret_again(hou, staff, change, named):
    before = ApiConfiguration.objects.get(organization=hou)
    response = api(staff).put("/api/organizations/HOU/connection", {**CONNECTION, **change, "secret": ""}, "json")
    assert response.status_code == 400, response.content
    (message,) = response.json()["fields"]["secret"]
    assert named in message and "password or API key again" in message
    after = ApiConfiguration.objects.get(organization=hou)
    assert (after.base_url, after.tenant, after.username, after.auth_type, after.secret) == (
        before.base_url,
        before.tenant,
        before.username,
        before.auth_type,
        before.secret,
    )

    response = api(staff).put("/api/organizations/HOU/connection", {**CONNECTION, **change}, "json")
    assert response.status_code == 200, response.content


@pytest.mark.django_db
def test_other_changes_keep_the_stored_secret(hou, staff):
    response = api(staff).put(
        "/api/organizations/HOU/connection",
        {**CONNECTION, "baseUrl": "https://eam.example.com/", "pageSize": 1234, "secret": ""},
        "json",
    )
    assert response.status_code == 200, response.content
    assert ApiConfiguration.objects.get(organization=hou).get_secret() == API_KEY


# --- http:// ----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_http_base_url_is_refused_unless_allowed(hou, staff, settings):
    settings.PEMS_ALLOW_HTTP = False
    body = {**CONNECTION, "baseUrl": "http://eam.example.com"}
    response = api(staff).put("/api/organizations/HOU/connection", body, "json")
    assert response.status_code == 400
    assert "PEMS_ALLOW_HTTP" in response.json()["fields"]["baseUrl"][0]

    settings.PEMS_ALLOW_HTTP = True
    assert api(staff).put("/api/organizations/HOU/connection", body, "json").status_code == 200


@pytest.mark.django_db
def test_a_stored_http_connection_is_not_used_unless_allowed(settings):
    configuration = ApiConfigurationFactory(organization=OrganizationFactory(code="RIO"), base_url="http://pems.test")
    settings.PEMS_ALLOW_HTTP = False
    with pytest.raises(ImproperlyConfigured, match="PEMS_ALLOW_HTTP"):
        configuration.pems_settings(configuration.organization)


# --- organization codes ---------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("code", ["RIO GRANDE", "RIO/1", "RIO\nHOU", "*", "RÍO"])
def test_an_organization_code_holds_only_letters_digits_underscore_and_dash(code, staff, monkeypatch):
    with pytest.raises(ValidationError) as caught:
        organization_create(code=code, name="x")
    assert "letters, digits" in str(caught.value.message_dict["code"])

    response = api(staff).post("/api/organizations", {"code": code, "name": "x"}, "json")
    assert response.status_code == 400 and list(response.json()["fields"]) == ["code"]

    monkeypatch.setenv("PEMS_SECRET", API_KEY)
    with pytest.raises(CommandError, match="letters, digits"):
        call_command(
            "add_organization", code, "--name", "x", "--pems-url", "https://eam.example.com", "--tenant", "T",
            "--username", "u", "--password-env", "PEMS_SECRET", "--timezone", "UTC",
        )  # fmt: skip
    assert not Organization.objects.exists()
    assert organization_create(code="rio_2-b", name="x").code == "RIO_2-B"


# --- encryption keys --------------------------------------------------------------------------------


def _connection_with_key(code: str, key: str, settings) -> ApiConfiguration:
    """A connection whose secret was encrypted with `key`."""
    keys = settings.PFASYNC_ENCRYPTION_KEYS
    settings.PFASYNC_ENCRYPTION_KEYS = [key]
    try:
        return ApiConfigurationFactory(organization=OrganizationFactory(code=code), password=f"secret-of-{code}")
    finally:
        settings.PFASYNC_ENCRYPTION_KEYS = keys


@pytest.mark.django_db
def test_the_secrets_check_decrypts_every_connection_and_names_each_it_cannot(settings):
    other_key = Fernet.generate_key().decode()
    _connection_with_key("AAA", other_key, settings)
    _connection_with_key("BBB", other_key, settings)
    ApiConfigurationFactory(organization=OrganizationFactory(code="CCC"))  # the newest, and readable
    errors = [error for error in run_checks() if error.id == "mirror.E001"]
    named = [code for code in ("AAA", "BBB", "CCC") if any(f"'{code} read connection" in e.msg for e in errors)]
    assert len(errors) == 2 and named == ["AAA", "BBB"]


@pytest.mark.django_db
def test_rotate_secrets_reencrypts_with_the_first_key_and_is_safe_to_repeat(settings, capsys):
    old_key, new_key = settings.PFASYNC_ENCRYPTION_KEYS[0], Fernet.generate_key().decode()
    _connection_with_key("RIO", old_key, settings)
    _connection_with_key("HOU", old_key, settings)
    settings.PFASYNC_ENCRYPTION_KEYS = [new_key, old_key]

    call_command("rotate_secrets")
    assert "Re-encrypted 2 PEMS secret(s)" in capsys.readouterr().out
    call_command("rotate_secrets")
    assert "Re-encrypted 0 PEMS secret(s) with the first key; 2 already used it" in capsys.readouterr().out

    settings.PFASYNC_ENCRYPTION_KEYS = [new_key]  # the old key can go now
    assert {c.get_secret() for c in ApiConfiguration.objects.all()} == {"secret-of-RIO", "secret-of-HOU"}


@pytest.mark.django_db
def test_rotate_secrets_names_a_secret_no_key_decrypts_and_rotates_the_rest(settings, capsys):
    _connection_with_key("LOST", Fernet.generate_key().decode(), settings)
    kept = ApiConfigurationFactory(organization=OrganizationFactory(code="RIO"))
    settings.PFASYNC_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), *settings.PFASYNC_ENCRYPTION_KEYS]
    with pytest.raises(CommandError, match="'LOST read connection"):
        call_command("rotate_secrets")
    assert "Re-encrypted 1 PEMS secret(s)" in capsys.readouterr().out
    kept.refresh_from_db()
    settings.PFASYNC_ENCRYPTION_KEYS = settings.PFASYNC_ENCRYPTION_KEYS[:1]
    assert kept.get_secret()


# --- deployment -------------------------------------------------------------------------------------


def _manage(*args: str, **environment: str) -> subprocess.CompletedProcess:
    # Explicitly empty values win over a developer's .env (it only fills in what is unset).
    clean = {
        "DJANGO_DEBUG": "",
        "DJANGO_SECURE": "",
        "PFASYNC_EMBEDDED_POSTGRES": "",
        "DATABASE_URL": "",
    }
    env = {**os.environ, **clean, **environment}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_check_deploy_is_clean_with_the_documented_production_settings():
    result = _manage(
        "manage.py",
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DJANGO_DEBUG="false",
        DJANGO_SECURE="true",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        JWT_SIGNING_KEY=secrets.token_urlsafe(50),
        # A database that is not there: the checks that need one pass over it.
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/pfasync_no_such_database",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr


def test_pfasync_refuses_to_start_without_postgresql():
    show_engine = ("-c", "from django.conf import settings; print(settings.DATABASES['default']['ENGINE'])")
    refused = _manage(*show_engine, DJANGO_SETTINGS_MODULE="pfasync.settings", DJANGO_DEBUG="false")
    assert refused.returncode != 0
    assert "DATABASE_URL is not set" in refused.stderr and "PFASYNC_EMBEDDED_POSTGRES=true" in refused.stderr

    # (The embedded PostgreSQL server, PFASYNC_EMBEDDED_POSTGRES or DJANGO_DEBUG: pfasync/tests/test_embedded_db.py.)
    # Another database is refused by name, before any migration or sync could half run on it.
    for url in ("sqlite:///db.sqlite3", "mysql://user@db.example:3306/pfasync"):
        refused = _manage(*show_engine, DJANGO_SETTINGS_MODULE="pfasync.settings", DATABASE_URL=url)
        assert refused.returncode != 0
        assert "PostgreSQL only" in refused.stderr and "PFASYNC_EMBEDDED_POSTGRES=true" in refused.stderr

    result = _manage(
        *show_engine, DJANGO_SETTINGS_MODULE="pfasync.settings", DATABASE_URL="postgres://u@db.example:5432/x"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "django.db.backends.postgresql"
