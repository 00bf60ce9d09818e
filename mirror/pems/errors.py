"""What can go wrong with a PEMS call: one error type per failure kind, their texts scrubbed of secrets."""

from __future__ import annotations

from mirror.secrets import secrets_scrub


class PemsError(Exception):
    """A PEMS call failed; `message` is PEMS's own text where it sent one.

    Its texts are scrubbed of every registered secret as it is made, so whatever stores, logs or
    shows one cannot leak a secret.
    """

    summary = "PEMS request failed"

    def __init__(self, message: str, *, pems_name: str | None = None, status: int | None = None) -> None:
        message = secrets_scrub(message)
        super().__init__(message)
        self.message = message
        self.pems_name = secrets_scrub(pems_name) if pems_name else pems_name
        self.status = status

    def __str__(self) -> str:
        details = []
        if self.status is not None:
            details.append(f"HTTP {self.status}")
        if self.pems_name:
            details.append(self.pems_name)
        where = f" ({', '.join(details)})" if details else ""
        return f"{self.summary}{where}: {self.message}"


class PemsAuthError(PemsError):
    """PEMS refused the credentials (or a fresh session expired at once)."""

    summary = "PEMS refused the credentials"


class PemsRequestError(PemsError):
    """PEMS rejected the request as invalid; retrying would not help."""

    summary = "PEMS rejected the request"


class PemsRecordConflict(PemsRequestError):
    """A PATCH was based on a `recordid` that is no longer current."""

    summary = "PEMS refused the change because the record was modified since it was read"


class PemsNotFound(PemsError):
    """The path or record does not exist (HTTP 404)."""

    summary = "PEMS has no such resource"


class PemsUnavailable(PemsError):
    """PEMS kept failing (overload, server fault, network) until the retries ran out."""

    summary = "PEMS is unavailable"

    def __init__(self, message: str, *, attempts: int, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.attempts = attempts


class PemsProtocolError(PemsError):
    """PEMS answered 200 with JSON the contract does not describe."""

    summary = "PEMS answered in a shape the client does not know"
