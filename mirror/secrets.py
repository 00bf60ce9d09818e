"""Encryption at rest for PEMS secrets (passwords and API keys), keyed from the environment."""

from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class SecretDecryptionError(ImproperlyConfigured):
    """A stored secret cannot be decrypted with the configured PFASYNC_ENCRYPTION_KEY."""


@cache
def _cipher_for(keys: tuple[str, ...]) -> MultiFernet:
    fernets = []
    for position, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key.strip().encode()))
        except (ValueError, TypeError):
            raise ImproperlyConfigured(
                f"PFASYNC_ENCRYPTION_KEY entry {position} is not a valid Fernet key (32 url-safe base64-encoded bytes)."
            ) from None
    return MultiFernet(fernets)


def get_cipher() -> MultiFernet:
    """The cipher for the configured key(s); the first key encrypts, every key decrypts."""
    keys = tuple(settings.PFASYNC_ENCRYPTION_KEYS)
    if not keys:
        raise ImproperlyConfigured("PFASYNC_ENCRYPTION_KEY is not set.")
    return _cipher_for(keys)


def encrypt_secret(plaintext: str) -> str:
    if not plaintext:
        return ""
    return get_cipher().encrypt(plaintext.encode()).decode()


def decrypt_secret(token: str, *, owner: str) -> str:
    """Decrypt a stored secret; `owner` names the record in the error, never the secret."""
    if not token:
        return ""
    try:
        return get_cipher().decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretDecryptionError(
            f"The secret of {owner} cannot be decrypted: PFASYNC_ENCRYPTION_KEY is not the key it "
            "was encrypted with (to rotate keys, list the new key first and the old one after it)."
        ) from None
