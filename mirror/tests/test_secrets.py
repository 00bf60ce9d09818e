"""PEMS secrets at rest: encrypted, never shown, and a bad key is a clear error."""

import pytest
from cryptography.fernet import Fernet
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command

from mirror.models import ApiConfiguration
from mirror.secrets import SecretDecryptionError, get_cipher
from mirror.services import organization_register

pytestmark = pytest.mark.django_db


def register(monkeypatch, *extra, code="RIO", secret="s3cret-Value-123", time_zone="America/Chicago"):
    monkeypatch.setenv("TEST_PEMS_SECRET", secret)
    call_command(
        "add_organization",
        code,
        "--name",
        "Rio Grande",
        "--pems-url",
        "http://127.0.0.1:8900",
        "--tenant",
        "PEMS_DEMO",
        "--username",
        "pfasync",
        "--password-env",
        "TEST_PEMS_SECRET",
        "--timezone",
        time_zone,
        *extra,
    )
    return ApiConfiguration.objects.get(organization__code=code)


def test_add_organization_stores_the_secret_encrypted(monkeypatch, capsys):
    configuration = register(monkeypatch, "--endpoint", "griddata")
    assert "Created organization RIO" in capsys.readouterr().out
    assert "s3cret-Value-123" not in configuration.secret
    assert configuration.get_secret() == "s3cret-Value-123"
    assert (configuration.endpoint, configuration.time_zone, configuration.usage) == (
        "griddata",
        "America/Chicago",
        "read",
    )
    assert "s3cret" not in repr(configuration.pems_settings(configuration.organization))


def test_add_organization_updates_instead_of_duplicating(monkeypatch, capsys):
    register(monkeypatch)
    configuration = register(monkeypatch, secret="rotated")
    assert "Updated organization RIO" in capsys.readouterr().out
    assert ApiConfiguration.objects.count() == 1 and configuration.get_secret() == "rotated"


def test_add_organization_refuses_bad_input_naming_it(monkeypatch):
    monkeypatch.delenv("NO_SUCH_VAR", raising=False)
    with pytest.raises(CommandError, match="NO_SUCH_VAR is not set"):
        call_command(
            "add_organization",
            "RIO",
            "--name",
            "x",
            "--pems-url",
            "http://h",
            "--tenant",
            "T",
            "--username",
            "u",
            "--password-env",
            "NO_SUCH_VAR",
            "--timezone",
            "UTC",
        )
    with pytest.raises(CommandError, match="time_zone"):
        register(monkeypatch, time_zone="Mars/Olympus")
    assert not ApiConfiguration.objects.exists()


def test_add_organization_requires_the_time_zone(monkeypatch):
    monkeypatch.setenv("TEST_PEMS_SECRET", "s3cret-Value-123")
    with pytest.raises(CommandError, match="--timezone"):
        call_command(
            "add_organization",
            "RIO",
            "--name",
            "Rio Grande",
            "--pems-url",
            "http://127.0.0.1:8900",
            "--tenant",
            "PEMS_DEMO",
            "--username",
            "pfasync",
            "--password-env",
            "TEST_PEMS_SECRET",
        )
    with pytest.raises(TypeError, match="time_zone"):
        organization_register(
            code="RIO", name="Rio", base_url="http://127.0.0.1:8900", tenant="T", username="u", secret="s"
        )
    assert not ApiConfiguration.objects.exists()


def test_malformed_key_is_a_clear_configuration_error(settings):
    settings.PFASYNC_ENCRYPTION_KEYS = ["not-a-fernet-key"]
    with pytest.raises(ImproperlyConfigured, match="PFASYNC_ENCRYPTION_KEY entry 1 is not a valid Fernet key"):
        get_cipher()
    settings.PFASYNC_ENCRYPTION_KEYS = []
    with pytest.raises(ImproperlyConfigured, match="PFASYNC_ENCRYPTION_KEY is not set"):
        get_cipher()


def test_wrong_key_fails_the_system_check_and_decryption_without_the_secret(monkeypatch, settings):
    configuration = register(monkeypatch)
    settings.PFASYNC_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    errors = [e for e in run_checks() if e.id == "mirror.E001"]
    assert len(errors) == 1 and "PFASYNC_ENCRYPTION_KEY is not the key" in errors[0].msg
    with pytest.raises(SecretDecryptionError) as error:
        configuration.get_secret()
    assert "s3cret" not in str(error.value)


def test_key_rotation_keeps_old_secrets_readable(monkeypatch, settings):
    old_key = settings.PFASYNC_ENCRYPTION_KEYS[0]
    configuration = register(monkeypatch)
    settings.PFASYNC_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), old_key]
    assert configuration.get_secret() == "s3cret-Value-123"
