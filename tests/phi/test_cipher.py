"""AES-256-GCM envelopes: round trip, key id header, context binding, tamper detection."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhirserver.phi.cipher import TamperedRecord, is_sealed, kid_of, record_context
from fhirserver.phi.codec import PhiCodec
from fhirserver.phi.keyring import Keyring, KeyringSource, write_keyring


def codec(tmp_path: Path) -> PhiCodec:
    return PhiCodec(KeyringSource.from_file(tmp_path / "k.json", check_seconds=0))


def test_round_trip_with_kid_and_fresh_nonce(tmp_path: Path) -> None:
    c = codec(tmp_path)
    raw = b'{"resourceType":"Patient","name":[{"family":"Doe"}]}'
    sealed, kid = c.seal_raw("Patient", "p1", 3, raw)
    again, _ = c.seal_raw("Patient", "p1", 3, raw)
    assert is_sealed(sealed) and kid_of(sealed) == kid == c.cipher.active_kid
    assert b"Doe" not in sealed and sealed != again  # a nonce per record
    assert c.open_raw("Patient", "p1", 3, sealed) == raw
    assert c.open_raw("Patient", "p1", 3, raw) == raw  # legacy plaintext passes through


@pytest.mark.parametrize(
    "where", [("Patient", "p2", 3), ("Patient", "p1", 2), ("Appointment", "p1", 3)]
)
def test_a_ciphertext_cannot_move_to_another_record(
    tmp_path: Path, where: tuple[str, str, int]
) -> None:
    c = codec(tmp_path)
    sealed, _ = c.seal_raw("Patient", "p1", 3, b"{}")
    with pytest.raises(TamperedRecord):
        c.open_raw(*where, sealed)


def test_flipped_bits_and_a_forged_kid_fail(tmp_path: Path) -> None:
    c = codec(tmp_path)
    ctx = record_context("Patient", "p1", 1)
    sealed, kid = c.cipher.seal(ctx, b"{}")
    for i in (len(sealed) - 1, len(sealed) - 20, 4 + len(kid) + 1):
        bad = bytearray(sealed)
        bad[i] ^= 0x80
        with pytest.raises(TamperedRecord):
            c.cipher.open(ctx, bytes(bad))
    # same key under another kid name: the header is authenticated too
    ring = c.source.keyring
    twin = "z" * len(kid)
    assert c.source.path is not None
    keys = {**ring.data_keys, twin: ring.data_keys[kid]}
    write_keyring(c.source.path, Keyring(ring.active, keys, ring.index_key))
    forged = sealed.replace(kid.encode(), twin.encode(), 1)
    with pytest.raises(TamperedRecord):
        c.cipher.open(ctx, forged)


def test_old_keys_still_open_after_rotation(tmp_path: Path) -> None:
    c = codec(tmp_path)
    ctx = record_context("Appointment", "a1", 1)
    old, old_kid = c.cipher.seal(ctx, b"x")
    assert c.source.path is not None
    write_keyring(c.source.path, c.source.keyring.with_new_active())
    new, new_kid = c.cipher.seal(ctx, b"y")
    assert new_kid != old_kid
    assert c.cipher.open(ctx, old) == b"x" and c.cipher.open(ctx, new) == b"y"
