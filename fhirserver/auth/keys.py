"""The server's token-signing keys: RS256 with a `kid`, kept in Mongo, rotated by the CLI.

Every server process behind a load balancer reads the same `auth_keys` collection.
`fhirserver keys rotate-signing` adds a new current key and demotes the old one to
`previous`: the JWKS serves both, so tokens signed before the rotation stay valid until
they expire; a second rotation retires the oldest. A running server re-reads the keys
every `refresh_seconds` and whenever it meets an unknown `kid`.

The private keys are stored in the database as JWKs sealed with the PHI record cipher
(AuthStore; docs/phi.md): a database dump holds no key that can sign a token.
"""

from __future__ import annotations

import secrets
import threading
import time
from datetime import UTC, datetime
from typing import Any

from joserfc.jwk import KeySet, RSAKey

from fhirserver.auth.store import AuthStore

SIGNING_ALG = "RS256"


class KeyRing:
    """Current signing key plus the published (current and previous) verification keys."""

    def __init__(self, store: AuthStore, refresh_seconds: float = 30.0) -> None:
        self.store = store
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._loaded_at = 0.0
        self._current: RSAKey | None = None
        self._public: dict[str, RSAKey] = {}
        self._jwks: dict[str, Any] = {"keys": []}

    def ensure(self) -> None:
        """Create the first key if the database has none."""
        if not self.store.signing_keys():
            self.rotate()
        self._load()

    def rotate(self) -> str:
        """Generate a new current key, demote the old one; returns the new kid."""
        kid = f"{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(4)}"
        key = RSAKey.generate_key(2048, parameters={"kid": kid, "alg": SIGNING_ALG, "use": "sig"})
        self.store.insert_signing_key(
            {
                "_id": kid,
                "alg": SIGNING_ALG,
                "status": "current",
                "created_at": datetime.now(UTC),
                "jwk": key.as_dict(private=True),
            }
        )
        self.store.demote_signing_keys(kid)
        self._loaded_at = 0.0
        return kid

    def _load(self) -> None:
        docs = sorted(self.store.signing_keys(), key=lambda d: d["created_at"], reverse=True)
        current: RSAKey | None = None
        public: dict[str, RSAKey] = {}
        for doc in docs:
            key = RSAKey.import_key(doc["jwk"])
            public[doc["_id"]] = key
            if doc["status"] == "current" and current is None:
                current = key
        with self._lock:
            self._current = current
            self._public = public
            self._jwks = {
                "keys": [
                    RSAKey.import_key(d["jwk"]).as_dict(
                        private=False, kid=d["_id"], alg=d["alg"], use="sig"
                    )
                    for d in docs
                ]
            }
            self._loaded_at = time.monotonic()

    def _fresh(self) -> None:
        if time.monotonic() - self._loaded_at > self.refresh_seconds:
            self._load()

    def signing_key(self) -> tuple[str, RSAKey]:
        """(kid, private key) to sign new tokens with."""
        self._fresh()
        if self._current is None:
            self.ensure()
        assert self._current is not None
        kid = self._current.kid
        assert kid is not None
        return kid, self._current

    def verification_key(self, kid: str | None) -> RSAKey | None:
        """The published key with this kid (re-reading once on a miss), or None."""
        if not kid:
            return None
        self._fresh()
        key = self._public.get(kid)
        if key is None and time.monotonic() - self._loaded_at > 1.0:
            # A rotation by another process; at most one re-read a second on unknown kids.
            self._load()
            key = self._public.get(kid)
        return key

    def jwks(self) -> dict[str, Any]:
        """The public JWKS (current and previous keys)."""
        self._fresh()
        return self._jwks

    def key_set(self) -> KeySet:
        """The published keys as a joserfc KeySet."""
        self._fresh()
        return KeySet(list(self._public.values()))
