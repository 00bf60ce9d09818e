"""The simulated tenant's authentication: credentials (Basic or API key) and sessions kept or expired."""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from typing import Any

from mirror.simulator.filters import BadRequest

NO_SESSION_EXCEPTION = "com.dstm.mp.businessprocess.NoSessionException"


class SimulatorSessions:
    """The sessions of a `PemsSimulator`: who may call it, and for how long a session holds."""

    def authenticate(self, headers: Any) -> str | None:
        """Check a request's session or credentials; returns the session id to report, if any."""
        session_id = (headers.get("sessionid") or "").strip()
        keep = (headers.get("keepsession") or "").strip().lower() == "true"
        with self._lock:
            if session_id:
                expires = self._sessions.get(session_id)
                if expires is None or expires < time.monotonic():
                    self._sessions.pop(session_id, None)
                    raise BadRequest(
                        "Your session has expired or is invalid. Please log in again.", name=NO_SESSION_EXCEPTION
                    )
                self._sessions[session_id] = time.monotonic() + self.session_ttl
                return session_id if keep else None
        if not self._credentials_ok(headers):
            raise BadRequest(
                "Authentication failed: invalid user name, password or API key.",
                name="com.dstm.mp.businessprocess.AuthenticationException",
                status=self.auth_failure_status,
            )
        if keep:
            new_id = secrets.token_hex(16)
            with self._lock:
                self._sessions[new_id] = time.monotonic() + self.session_ttl
            return new_id
        return None

    def _credentials_ok(self, headers: Any) -> bool:
        api_key = headers.get("x-api-key")
        if api_key:
            return api_key in self.api_keys
        authorization = headers.get("authorization") or ""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return bool(sep) and user in self.users and secrets.compare_digest(self.users[user], password)

    def expire_sessions(self) -> int:
        """Expire every session; returns how many there were."""
        with self._lock:
            count = len(self._sessions)
            self._sessions.clear()
        return count
