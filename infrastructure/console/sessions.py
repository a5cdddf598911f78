"""Console sessions: a random session id in an HttpOnly cookie, mapped server-side to a token.

The token itself never reaches the browser after sign-in; it is authenticated again on every
request (`Registry.authenticate`), so a revoked token ends its sessions on the next request."""

from __future__ import annotations

import hmac
import secrets
import threading
from dataclasses import dataclass, field
from time import monotonic

COOKIE = "gnlc_session"
SIGN_IN_CSRF_COOKIE = "gnlc_sign_in_csrf"
IDLE_SECONDS = 8 * 3600


@dataclass
class Session:
    token: str
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    seen: float = field(default_factory=monotonic)


class Sessions:
    """The sessions of one server process, in memory (they end with the process)."""

    def __init__(self, idle_seconds: float = IDLE_SECONDS) -> None:
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self.idle_seconds = idle_seconds

    def start(self, token: str) -> tuple[str, Session]:
        session_id = secrets.token_urlsafe(32)
        session = Session(token)
        with self._lock:
            self._expire()
            self._sessions[session_id] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None or monotonic() - session.seen > self.idle_seconds:
                self._sessions.pop(session_id, None)
                return None
            session.seen = monotonic()
            return session

    def end(self, session_id: str | None) -> None:
        with self._lock:
            self._sessions.pop(session_id or "", None)

    def _expire(self) -> None:
        now = monotonic()
        for key in [k for k, s in self._sessions.items() if now - s.seen > self.idle_seconds]:
            del self._sessions[key]


def same(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison of CSRF tokens; a missing one never matches."""
    return bool(given) and bool(expected) and hmac.compare_digest(str(given), str(expected))
