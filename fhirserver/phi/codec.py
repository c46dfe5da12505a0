"""PhiCodec: the keyring, the record cipher and the blind index of one process.

Built once from the settings (`PhiCodec.from_settings`) and handed to the ResourceStore,
which seals the `raw` of PHI-bearing types on write and opens it on read, and whose indexer
it wraps so PHI search values are stored as blind-index tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fhirserver.config import Settings
from fhirserver.phi.blind import BlindIndex
from fhirserver.phi.cipher import PHI_TYPES, RecordCipher, record_context
from fhirserver.phi.keyring import KEYRING_FILE, Keyring, KeyringSource

Indexer = Callable[[Mapping[str, Any]], tuple[dict[str, list[Any]], dict[str, str]]]


def keyring_path(settings: Settings) -> Path:
    """Where the keyring file of these settings lives (FHIRSERVER_PHI_KEYRING or data dir)."""
    return settings.phi_keyring or settings.data_dir / KEYRING_FILE


def keyring_source(settings: Settings) -> KeyringSource:
    """The keyring the settings name: environment keys if given, else the (created) file."""
    if settings.phi_data_keys:
        if not settings.phi_index_key:
            raise ValueError("FHIRSERVER_PHI_DATA_KEYS needs FHIRSERVER_PHI_INDEX_KEY too")
        keyring = Keyring.from_env(
            settings.phi_data_keys, settings.phi_active_kid, settings.phi_index_key
        )
        return KeyringSource(keyring)
    return KeyringSource.from_file(keyring_path(settings), settings.phi_keyring_check_seconds)


class PhiCodec:
    """Sealing and blind indexing for PHI-bearing resources (docs/phi.md)."""

    def __init__(self, source: KeyringSource) -> None:
        self.source = source
        self.cipher = RecordCipher(source)
        self.blind = BlindIndex(source)

    @classmethod
    def from_settings(cls, settings: Settings) -> PhiCodec:
        """The codec of a server (or CLI command) running with `settings`."""
        return cls(keyring_source(settings))

    @staticmethod
    def sealed_type(resource_type: str) -> bool:
        """True when resources of this type are stored sealed."""
        return resource_type in PHI_TYPES

    def seal_raw(self, resource_type: str, rid: str, version: int, raw: bytes) -> tuple[bytes, str]:
        """(sealed raw, kid) of one resource version."""
        return self.cipher.seal(record_context(resource_type, rid, version), raw)

    def open_raw(self, resource_type: str, rid: str, version: int, stored: bytes) -> bytes:
        """The JSON bytes of one stored resource version (plaintext passes through)."""
        return self.cipher.open(record_context(resource_type, rid, version), stored)

    def indexer(self, inner: Indexer) -> Indexer:
        """`inner` with the PHI parameters' values replaced by blind-index tokens."""
        blind = self.blind

        def index(resource: Mapping[str, Any]) -> tuple[dict[str, list[Any]], dict[str, str]]:
            idx, srt = inner(resource)
            return blind.blind(str(resource.get("resourceType")), idx, srt)

        return index
