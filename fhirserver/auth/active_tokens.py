"""A short-lived per-process memory of verified access tokens, so a FHIR request neither
reads the token store nor re-verifies the JWT every time.

Revocations made through this process's AuthStore evict at once (revoke endpoint, code
replay, refresh-token reuse); one made by another server process is seen here within
`ttl` seconds (FHIRSERVER_AUTH_TOKEN_CACHE_SECONDS, default 5; 0 remembers nothing).
Expiry is the caller's to check on every use.
"""

from __future__ import annotations

import threading
import time
from typing import Generic, TypeVar

V = TypeVar("V")
_MAX_ENTRIES = 10_000


class TokenMemo(Generic[V]):
    """key -> value of one access token (its jti and grant remembered for eviction);
    thread-safe: the token store is read from the thread pool."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[V, str, str, float]] = {}

    def get(self, key: str) -> V | None:
        """The remembered value, if still fresh."""
        if self.ttl <= 0:
            return None
        with self._lock:
            hit = self._entries.get(key)
            if hit is None:
                return None
            if hit[3] < time.monotonic():
                del self._entries[key]
                return None
            return hit[0]

    def put(self, key: str, value: V, jti: str, grant_id: str) -> None:
        """Remember a value verified against the store."""
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._entries) >= _MAX_ENTRIES:
                now = time.monotonic()
                self._entries = {k: v for k, v in self._entries.items() if v[3] >= now}
                if len(self._entries) >= _MAX_ENTRIES:
                    self._entries.clear()
            self._entries[key] = (value, jti, grant_id, time.monotonic() + self.ttl)

    def forget(self, jti: str | None = None, grant_id: str | None = None) -> None:
        """Evict one token, or every token of one grant (called on revocation)."""
        with self._lock:
            self._entries = {
                k: v for k, v in self._entries.items()
                if not ((jti is not None and v[1] == jti)
                        or (grant_id is not None and v[2] == grant_id))
            }
