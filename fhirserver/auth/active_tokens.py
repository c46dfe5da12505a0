"""A short-lived memory of active access-token records, so a FHIR request does not read the
token store every time.

Revocations made through this process's AuthStore evict at once (revoke endpoint, code
replay, refresh-token reuse); one made by another server process is seen here within
`ttl` seconds (FHIRSERVER_AUTH_TOKEN_CACHE_SECONDS, default 5; 0 reads the store on every
request). Expiry is checked on every use, against the record, not the cache.
"""

from __future__ import annotations

import threading
import time

from fhirserver.auth.models import TokenRecord

_MAX_ENTRIES = 10_000


class ActiveTokenCache:
    """jti -> (record, deadline); thread-safe (callers run in the thread pool)."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[TokenRecord, float]] = {}

    def get(self, jti: str) -> TokenRecord | None:
        """The remembered record of `jti`, if still fresh."""
        if self.ttl <= 0:
            return None
        with self._lock:
            hit = self._entries.get(jti)
            if hit is None:
                return None
            if hit[1] < time.monotonic():
                del self._entries[jti]
                return None
            return hit[0]

    def put(self, record: TokenRecord) -> None:
        """Remember a record read from the store."""
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._entries) >= _MAX_ENTRIES:
                now = time.monotonic()
                self._entries = {k: v for k, v in self._entries.items() if v[1] >= now}
                if len(self._entries) >= _MAX_ENTRIES:
                    self._entries.clear()
            self._entries[record.jti] = (record, time.monotonic() + self.ttl)

    def forget(self, jti: str | None = None, grant_id: str | None = None) -> None:
        """Evict one token, or every token of one grant (called on revocation)."""
        with self._lock:
            if jti is not None:
                self._entries.pop(jti, None)
            if grant_id is not None:
                self._entries = {
                    k: v for k, v in self._entries.items() if v[0].grant_id != grant_id
                }
