"""AES-256-GCM sealing of PHI blobs: the stored `raw` of PHI-bearing resources and others.

A sealed blob is self-describing:

```
b"\\x00P1" | kid length (1 byte) | kid (ASCII) | nonce (12 bytes) | ciphertext + GCM tag
```

The first byte (0x00) can never start JSON, so plaintext written before encryption is told
apart and still read. The associated data is the header plus a *context* string naming the
record (`Patient/<id>/<version>` for resources), so a ciphertext copied onto another record,
another version or another key id fails authentication instead of being served.
"""

from __future__ import annotations

import os
import threading

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fhirserver.phi.keyring import KeyringSource

MAGIC = b"\x00P1"
NONCE_BYTES = 12
# Resource types whose stored JSON is sealed (docs/phi.md).
PHI_TYPES: frozenset[str] = frozenset({"Patient", "Appointment", "AppointmentResponse"})
# Types whose stored JSON is sealed whole: the PHI types, and the audit trail (its records
# carry search strings such as `Patient?name=...` and are written only by AuditLog).
SEALED_TYPES: frozenset[str] = PHI_TYPES | {"AuditEvent"}


class TamperedRecord(RuntimeError):
    """A sealed blob failed authentication: tampered, moved to another record, or wrong key."""


def is_sealed(blob: bytes) -> bool:
    """True when `blob` is a sealed envelope (not legacy plaintext)."""
    return blob[:3] == MAGIC


def kid_of(blob: bytes) -> str | None:
    """The key id a sealed blob names; None for plaintext."""
    if not is_sealed(blob) or len(blob) < 4:
        return None
    n = blob[3]
    return blob[4 : 4 + n].decode("ascii", "replace")


def record_context(resource_type: str, rid: str, version: int) -> str:
    """The associated-data context of one stored resource version."""
    return f"{resource_type}/{rid}/{version}"


def user_name_context(username: str) -> str:
    """The associated-data context of a login user's sealed display name."""
    return f"auth_users/{username}"


def signing_key_context(kid: str) -> str:
    """The associated-data context of a sealed token-signing private key."""
    return f"auth_keys/{kid}"


class RecordCipher:
    """Seals and opens blobs with the keyring's data keys (one cached AESGCM per kid)."""

    def __init__(self, source: KeyringSource) -> None:
        self.source = source
        self._aead: dict[str, AESGCM] = {}
        self._lock = threading.Lock()

    def _aesgcm(self, kid: str) -> AESGCM:
        aead = self._aead.get(kid)
        if aead is None:
            with self._lock:
                aead = AESGCM(self.source.data_key(kid))
                self._aead[kid] = aead
        return aead

    @property
    def active_kid(self) -> str:
        """The kid new blobs are sealed under (follows keyring file changes)."""
        return self.source.keyring.active

    def seal(self, context: str, plaintext: bytes, kid: str | None = None) -> tuple[bytes, str]:
        """(sealed blob, kid): `plaintext` under the active key (or `kid`), bound to `context`."""
        kid = kid or self.active_kid
        kid_bytes = kid.encode("ascii")
        header = MAGIC + bytes([len(kid_bytes)]) + kid_bytes
        nonce = os.urandom(NONCE_BYTES)
        ct = self._aesgcm(kid).encrypt(nonce, plaintext, header + b"|" + context.encode())
        return header + nonce + ct, kid

    def open(self, context: str, blob: bytes) -> bytes:
        """The plaintext of `blob` (legacy plaintext passes through); TamperedRecord if bad."""
        if blob[:3] != MAGIC:
            return blob
        try:
            n = blob[3]
            header_end = 4 + n
            kid = blob[4:header_end].decode("ascii")
            nonce = blob[header_end : header_end + NONCE_BYTES]
            aead = self._aesgcm(kid)
            return aead.decrypt(
                nonce, blob[header_end + NONCE_BYTES :], blob[:header_end] + b"|" + context.encode()
            )
        except (InvalidTag, IndexError, UnicodeDecodeError, ValueError):
            raise TamperedRecord(
                f"sealed PHI record {context} failed authentication "
                "(tampered, copied from another record, or sealed with another key)"
            ) from None
