"""Sessions (cookie or bearer token), CSRF tokens, failed-login rate limiting and the optional
trusted IAM header. Sessions live in memory: restarting the console signs everyone out.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field

COOKIE = "sealfuse_session"


@dataclass
class Session:
    token: str
    user: str
    csrf: str
    kind: str  # "cookie" | "bearer" | "header"
    expires: float
    created: float = field(default_factory=time.time)


class Sessions:
    def __init__(self, lifetime_seconds: float) -> None:
        self.lifetime = lifetime_seconds
        self._by_token: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, user: str, kind: str) -> Session:
        s = Session(secrets.token_urlsafe(32), user, secrets.token_urlsafe(32), kind,
                    time.time() + self.lifetime)
        with self._lock:
            self._by_token[s.token] = s
            self._prune()
        return s

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        with self._lock:
            s = self._by_token.get(token)
            if s is None:
                return None
            if s.expires < time.time():
                self._by_token.pop(token, None)
                return None
            return s

    def drop(self, token: str) -> None:
        with self._lock:
            self._by_token.pop(token, None)

    def drop_user(self, user: str) -> None:
        with self._lock:
            for t in [t for t, s in self._by_token.items() if s.user == user]:
                del self._by_token[t]

    def _prune(self) -> None:
        now = time.time()
        for t in [t for t, s in self._by_token.items() if s.expires < now]:
            del self._by_token[t]


def csrf_ok(session: Session, supplied: str | None) -> bool:
    return bool(supplied) and hmac.compare_digest(session.csrf.encode(), str(supplied).encode())


class RateLimiter:
    """At most `max_failures` failed logins per user name and per client address within
    `window` seconds; once over, every attempt (even a right password) waits out the window."""

    def __init__(self, max_failures: int, window: float) -> None:
        self.max = max_failures
        self.window = window
        self._fails: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._fails.setdefault(key, deque())
        while q and q[0] < now - self.window:
            q.popleft()
        return q

    def blocked(self, *keys: str) -> float:
        """Seconds until a locked key may try again (0 when none is locked)."""
        now = time.monotonic()
        with self._lock:
            wait = 0.0
            for k in keys:
                q = self._recent(k, now)
                if len(q) >= self.max:
                    wait = max(wait, q[-1] + self.window - now)
            return wait

    def fail(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for k in keys:
                self._recent(k, now).append(now)
            if len(self._fails) > 10000:  # bound memory under a spray of names
                for k in [k for k, q in self._fails.items() if not q]:
                    del self._fails[k]

    def success(self, *keys: str) -> None:
        with self._lock:
            for k in keys:
                self._fails.pop(k, None)


def address_in(addr: str | None, networks: tuple[str, ...]) -> bool:
    if not addr:
        return False
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(n, strict=False) for n in networks)
