"""PEMS secrets: encryption at rest (keyed from the environment) and the scrubber that keeps them out
of every error text, log line and response.

Every secret the process handles is registered here, with the forms derived from it (a Basic token
is the password too): `decrypt_secret` registers what it decrypts, `PemsClient` registers its
secret and Basic token. `secrets_scrub` replaces each registered form in a text with `***`;
`SecretScrubFilter` does it to every log record that passes the console handler.
"""

import json
import logging
import re
import threading
from functools import cache
from urllib.parse import quote, quote_plus

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError

SCRUBBED = "***"
# Forms shorter than this are not scrubbed: replacing every "500" or "pw" would mangle ordinary
# text. A real PEMS password or API key is far longer.
MIN_SCRUBBED_LENGTH = 4


class SecretDecryptionError(ImproperlyConfigured):
    """A stored secret cannot be decrypted with the configured PFASYNC_ENCRYPTION_KEY."""


# --- validation ---------------------------------------------------------------------------------


def validate_secret(value: str) -> None:
    """Refuse a secret with leading or trailing whitespace or a control character (a secret file read
    with its final newline, a pasted tab). The message never repeats the secret."""
    if value != value.strip() or any(ord(character) < 32 or 127 <= ord(character) < 160 for character in value):
        raise ValidationError(
            "The password or API key starts or ends with whitespace, or holds a control character "
            "(a line break, a tab, ...): remove it. A secret read from a file often ends with a newline.",
            code="invalid_secret",
        )


# --- encryption at rest -------------------------------------------------------------------------


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


def _keys() -> tuple[str, ...]:
    keys = tuple(settings.PFASYNC_ENCRYPTION_KEYS)
    if not keys:
        raise ImproperlyConfigured("PFASYNC_ENCRYPTION_KEY is not set.")
    return keys


def get_cipher() -> MultiFernet:
    """The cipher for the configured key(s); the first key encrypts, every key decrypts."""
    return _cipher_for(_keys())


def encrypt_secret(plaintext: str) -> str:
    if not plaintext:
        return ""
    return get_cipher().encrypt(plaintext.encode()).decode()


def decrypt_secret(token: str, *, owner: str) -> str:
    """Decrypt a stored secret, and register it with the scrubber; `owner` names the record in the
    error, never the secret."""
    if not token:
        return ""
    try:
        plaintext = get_cipher().decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretDecryptionError(
            f"The secret of {owner} cannot be decrypted: PFASYNC_ENCRYPTION_KEY is not the key it "
            "was encrypted with (to rotate keys, list the new key first and the old one after it)."
        ) from None
    secret_register(plaintext)
    return plaintext


def rotate_secret(token: str, *, owner: str) -> str | None:
    """`token` encrypted again with the first key, or None when the first key already encrypts it.

    Raises SecretDecryptionError (naming `owner`) when no configured key decrypts it.
    """
    keys = _keys()
    try:
        _cipher_for(keys[:1]).decrypt(token.encode())
        return None
    except InvalidToken:
        pass
    try:
        return get_cipher().rotate(token.encode()).decode()
    except InvalidToken:
        raise SecretDecryptionError(
            f"The secret of {owner} cannot be decrypted with any PFASYNC_ENCRYPTION_KEY entry."
        ) from None


# --- the scrubber -------------------------------------------------------------------------------

_registered: set[str] = set()
_registry_lock = threading.Lock()
_pattern: re.Pattern[str] | None = None


def _forms(value: str) -> set[str]:
    """`value` as it may appear in a text: itself, stripped (a secret read with its newline), as
    repr() and JSON escape it, and URL-quoted."""
    return {
        value,
        value.strip(),
        repr(value)[1:-1],
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        quote(value, safe=""),
        quote_plus(value),
    }


def secret_register(value: str, *derived: str) -> None:
    """Scrub `value` and each form `derived` from it (e.g. a Basic token) from every text from now on."""
    global _pattern
    forms = {form for item in (value, *derived) if item for form in _forms(item)}
    forms = {form for form in forms if len(form) >= MIN_SCRUBBED_LENGTH}
    with _registry_lock:
        if forms <= _registered:
            return
        _registered.update(forms)
        # Longest first, so that a form containing another is replaced whole.
        alternatives = sorted(_registered, key=len, reverse=True)
        _pattern = re.compile("|".join(map(re.escape, alternatives)))


def secrets_scrub(text: str) -> str:
    """`text` with every registered secret form replaced by `***`."""
    pattern = _pattern
    if pattern is None or not text:
        return text
    return pattern.sub(SCRUBBED, str(text))


class SecretScrubFilter(logging.Filter):
    """Scrubs registered secrets from a log record's message, arguments and traceback.

    Installed on the console handler (settings.LOGGING), so it sees every record any logger emits.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if _pattern is None:
            return True
        message = record.getMessage()
        scrubbed = secrets_scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = secrets_scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = secrets_scrub(record.stack_info)
        return True
