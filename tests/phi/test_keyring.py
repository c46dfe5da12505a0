"""The keyring file: created 0600 once, atomic rewrites picked up by running processes."""

from __future__ import annotations

import base64
import os
import secrets
import stat
from pathlib import Path

import pytest

from fhirserver.config import Settings
from fhirserver.phi.codec import PhiCodec, keyring_path
from fhirserver.phi.keyring import (
    Keyring,
    KeyringError,
    KeyringSource,
    load_or_create,
    write_keyring,
)


def test_created_once_with_owner_only_permissions(tmp_path: Path) -> None:
    path = tmp_path / "d" / "phi-keyring.json"
    first = load_or_create(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create(path) == first
    assert len(first.data_keys[first.active]) == 32 and len(first.index_key) == 32
    assert first.index_key != first.data_keys[first.active]


def test_default_path_is_in_the_data_dir(tmp_path: Path) -> None:
    assert keyring_path(Settings(data_dir=tmp_path)) == tmp_path / "phi-keyring.json"
    custom = tmp_path / "elsewhere.json"
    assert keyring_path(Settings(data_dir=tmp_path, phi_keyring=custom)) == custom


def test_rotation_and_retire_keep_the_index_key(tmp_path: Path) -> None:
    ring = Keyring.generate()
    rotated = ring.with_new_active()
    assert rotated.active != ring.active and set(rotated.data_keys) > set(ring.data_keys)
    assert rotated.index_key == ring.index_key
    with pytest.raises(KeyringError):
        rotated.without(rotated.active)
    retired = rotated.without(ring.active)
    assert set(retired.data_keys) == {rotated.active} and retired.retired == (ring.active,)
    path = tmp_path / "k.json"
    write_keyring(path, retired)
    assert Keyring.from_json(path.read_bytes()) == retired
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_running_source_sees_a_new_active_key(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    source = KeyringSource.from_file(path, check_seconds=0)
    old = source.keyring.active
    rotated = source.keyring.with_new_active()
    write_keyring(path, rotated)
    assert source.keyring.active == rotated.active != old
    # an unknown kid forces a re-read even between checks
    slow = KeyringSource.from_file(path, check_seconds=3600)
    again = rotated.with_new_active()
    write_keyring(path, again)
    assert slow.data_key(again.active) == again.data_keys[again.active]
    with pytest.raises(KeyringError):
        slow.data_key("k-never")


def test_environment_keys(tmp_path: Path) -> None:
    k1, k2, ix = (base64.b64encode(secrets.token_bytes(32)).decode() for _ in range(3))
    settings = Settings(data_dir=tmp_path, phi_data_keys=f"a:{k1},b:{k2}", phi_index_key=ix)
    codec = PhiCodec.from_settings(settings)
    assert codec.cipher.active_kid == "b"
    assert not (tmp_path / "phi-keyring.json").exists()
    pinned = Settings(data_dir=tmp_path, phi_data_keys=f"a:{k1},b:{k2}", phi_index_key=ix,
                      phi_active_kid="a")
    assert PhiCodec.from_settings(pinned).cipher.active_kid == "a"
    with pytest.raises(KeyringError):
        Keyring.from_env(f"a:{k1[:10]}", None, ix)
    with pytest.raises(ValueError):
        PhiCodec.from_settings(Settings(data_dir=tmp_path, phi_data_keys=f"a:{k1}"))


def test_malformed_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    path.write_text('{"active": "x"}')
    with pytest.raises(KeyringError):
        load_or_create(path)
