"""Blind-index tokens: what is stored instead of PHI search values, and how they match."""

from __future__ import annotations

from pathlib import Path

from fhirserver.context import full_indexer
from fhirserver.phi.blind import BLINDED, date_grains, string_prefixes
from fhirserver.phi.codec import PhiCodec
from fhirserver.phi.keyring import KeyringSource

PATIENT = {
    "resourceType": "Patient",
    "identifier": [{"system": "urn:mrn", "value": "12345"}],
    "name": [{"family": "Núñez", "given": ["Ana"]}],
    "birthDate": "1980-05",
    "telecom": [{"system": "phone", "value": "555-0100"}],
    "gender": "female",
}


def test_prefixes_are_bounded_and_word_ends_extend_them() -> None:
    assert string_prefixes("ana") == ["a", "an", "ana"]
    long = "742 evergreen terrace springfield"
    got = string_prefixes(long)
    assert got[:16] == [long[:i] for i in range(1, 17)]
    assert got[16:] == ["742 evergreen terrace", long]


def test_date_grains_follow_precision() -> None:
    assert date_grains("1980-05-03", "1980-05-03") == ["1980", "1980-05", "1980-05-03"]
    assert date_grains("1980-05-01", "1980-05-31") == ["1980", "1980-05"]
    assert date_grains("1980-01-01", "1980-12-31") == ["1980"]


def test_blinded_index_holds_tokens_only(tmp_path: Path) -> None:
    codec = PhiCodec(KeyringSource.from_file(tmp_path / "k.json"))
    idx, srt = codec.indexer(full_indexer)(PATIENT)
    for name in BLINDED["Patient"]:
        assert srt.get(name, "") == ""
        assert all(isinstance(t, str) and len(t) == 22 for t in idx.get(name, []))
    assert "phonetic" not in idx  # searched through `name`'s tokens
    text = repr(idx) + repr(srt)
    for plain in ("nunez", "Núñez", "ana", "12345", "555-0100", "1980"):
        assert plain not in text
    assert idx["gender"][0]["c"] == "female"  # not PHI: stays searchable and sortable
    blind = codec.blind
    assert blind.token("Patient", "family", "p", "nu") in idx["family"]
    assert blind.token("Patient", "family", "x", "Núñez") in idx["family"]
    assert blind.token("Patient", "given", "p", "nu") not in idx["given"]
    assert blind.token("Patient", "identifier", "sc", "urn:mrn|12345") in idx["identifier"]
    assert blind.token("Patient", "birthdate", "d", "1980-05") in idx["birthdate"]
    assert blind.token("Patient", "birthdate", "d", "1980-05-01") not in idx["birthdate"]


def test_another_index_key_gives_other_tokens(tmp_path: Path) -> None:
    a = PhiCodec(KeyringSource.from_file(tmp_path / "a.json")).blind
    b = PhiCodec(KeyringSource.from_file(tmp_path / "b.json")).blind
    assert a.token("Patient", "name", "p", "ana") != b.token("Patient", "name", "p", "ana")
    assert a.token("Patient", "name", "p", "ana") != a.token("Patient", "family", "p", "ana")
