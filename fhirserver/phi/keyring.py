"""The PHI keyring: AES-256 data keys by key id, the active one, and the blind-index key.

Stored as a JSON file (0600) in the data dir by default, created on first start:

```
{"active": "k1", "data_keys": {"k1": "<base64 32 bytes>"}, "index_key": "<base64 32 bytes>"}
```

Production may instead give the keys in the environment (`FHIRSERVER_PHI_DATA_KEYS`,
`FHIRSERVER_PHI_ACTIVE_KID`, `FHIRSERVER_PHI_INDEX_KEY`); see docs/phi.md. The file (or the
environment) must be backed up apart from the database: without it nothing can be read.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

KEY_BYTES = 32
KEYRING_FILE = "phi-keyring.json"


class KeyringError(RuntimeError):
    """The keyring is missing, malformed or lacks a key a record names."""


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def _key(text: str, what: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyringError(f"{what} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise KeyringError(f"{what} must be {KEY_BYTES} bytes (base64), got {len(key)}")
    return key


def new_kid() -> str:
    """A fresh key id: sortable by creation time, unique (`k<unix seconds>-<random>`)."""
    return f"k{int(time.time())}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Keyring:
    """Data keys by kid, the kid new records are sealed under, and the blind-index key."""

    active: str
    data_keys: Mapping[str, bytes]
    index_key: bytes
    retired: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.active not in self.data_keys:
            raise KeyringError(f"the active key {self.active!r} is not in the keyring")
        if len(self.index_key) != KEY_BYTES:
            raise KeyringError("the blind-index key must be 32 bytes")

    @classmethod
    def generate(cls) -> Keyring:
        """A new keyring: one random data key (active) and one random blind-index key."""
        kid = new_kid()
        return cls(kid, {kid: secrets.token_bytes(KEY_BYTES)}, secrets.token_bytes(KEY_BYTES))

    def with_new_active(self) -> Keyring:
        """This keyring plus a new random data key, made active."""
        kid = new_kid()
        while kid in self.data_keys:
            kid = new_kid()
        keys = {**self.data_keys, kid: secrets.token_bytes(KEY_BYTES)}
        return Keyring(kid, keys, self.index_key, self.retired)

    def without(self, kid: str) -> Keyring:
        """This keyring with data key `kid` removed (never the active one)."""
        if kid == self.active:
            raise KeyringError(f"{kid} is the active key; rotate first")
        if kid not in self.data_keys:
            raise KeyringError(f"no data key {kid!r} in the keyring")
        keys = {k: v for k, v in self.data_keys.items() if k != kid}
        return Keyring(self.active, keys, self.index_key, (*self.retired, kid))

    def to_json(self) -> bytes:
        """The file form."""
        doc = {
            "active": self.active,
            "data_keys": {k: _b64(v) for k, v in self.data_keys.items()},
            "index_key": _b64(self.index_key),
            "retired": list(self.retired),
        }
        return json.dumps(doc, indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, text: bytes | str, origin: str = "keyring") -> Keyring:
        """Parse the file form; KeyringError when malformed."""
        try:
            doc = json.loads(text)
            keys = {str(k): _key(v, f"{origin}: data key {k}") for k, v in doc["data_keys"].items()}
            return cls(
                str(doc["active"]),
                keys,
                _key(doc["index_key"], f"{origin}: index_key"),
                tuple(doc.get("retired", ())),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KeyringError(f"{origin} is malformed: {exc}") from None

    @classmethod
    def from_env(cls, data_keys: str, active: str | None, index_key: str) -> Keyring:
        """From `kid:base64,kid:base64`, the active kid (default: the last) and the index key."""
        keys: dict[str, bytes] = {}
        for item in data_keys.split(","):
            kid, sep, b64 = item.strip().partition(":")
            if not sep or not kid:
                raise KeyringError("FHIRSERVER_PHI_DATA_KEYS must be 'kid:base64[,kid:base64...]'")
            keys[kid] = _key(b64, f"FHIRSERVER_PHI_DATA_KEYS[{kid}]")
        return cls(active or list(keys)[-1], keys, _key(index_key, "FHIRSERVER_PHI_INDEX_KEY"))


def _write_temp(path: Path, keyring: Keyring) -> Path:
    """A complete 0600 copy of `keyring` next to `path`, on disk (fsynced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, keyring.to_json())
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def write_keyring(path: Path, keyring: Keyring) -> None:
    """Replace the keyring file atomically (complete 0600 temp file, then rename)."""
    os.replace(_write_temp(path, keyring), path)


def load_or_create(path: Path) -> Keyring:
    """The keyring in `path`; a new one is created if there is none. Creation is atomic
    (a complete temp file hard-linked into place): racing starters agree on one keyring
    and a crash never leaves a half-written file."""
    try:
        return Keyring.from_json(path.read_bytes(), str(path))
    except FileNotFoundError:
        pass
    keyring = Keyring.generate()
    tmp = _write_temp(path, keyring)
    try:
        os.link(tmp, path)
    except FileExistsError:  # another process created it first: use theirs
        return Keyring.from_json(path.read_bytes(), str(path))
    finally:
        tmp.unlink()
    return keyring


class KeyringSource:
    """The current keyring of a running process.

    A file keyring is re-read when its mtime changes, checked at most every
    `check_seconds` (so `fhirserver keys rotate` reaches running servers without a
    restart), and at once when a record names a kid this process does not know yet.
    An environment keyring is fixed for the process's life.
    """

    def __init__(
        self, keyring: Keyring, path: Path | None = None, check_seconds: float = 1.0
    ) -> None:
        self._keyring = keyring
        self.path = path
        self.check_seconds = check_seconds
        self._lock = threading.Lock()
        self._checked = time.monotonic()
        self._mtime = self._stat()

    @classmethod
    def from_file(cls, path: Path, check_seconds: float = 1.0) -> KeyringSource:
        """Load (or create) the keyring file at `path` and watch it."""
        return cls(load_or_create(path), path, check_seconds)

    def _stat(self) -> int | None:
        if self.path is None:
            return None
        try:
            return os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            return None

    @property
    def keyring(self) -> Keyring:
        """The keyring, re-read if the file changed (checked at most every check_seconds)."""
        if self.path is not None and time.monotonic() - self._checked >= self.check_seconds:
            self.refresh()
        return self._keyring

    def refresh(self, force: bool = False) -> bool:
        """Re-read the file if its mtime changed (or `force`); True when it was re-read."""
        if self.path is None:
            return False
        with self._lock:
            self._checked = time.monotonic()
            mtime = self._stat()
            if mtime is None or (mtime == self._mtime and not force):
                return False
            self._keyring = Keyring.from_json(self.path.read_bytes(), str(self.path))
            self._mtime = mtime
            return True

    def data_key(self, kid: str) -> bytes:
        """The data key `kid`; re-reads the file once if unknown; KeyringError if absent."""
        key = self._keyring.data_keys.get(kid)
        if key is None and self.refresh(force=True):
            key = self._keyring.data_keys.get(kid)
        if key is None:
            raise KeyringError(f"no data key {kid!r} in the PHI keyring (retired or lost?)")
        return key
