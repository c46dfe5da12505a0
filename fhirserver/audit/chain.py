"""The hash chain over the audit trail.

Record n carries `seq` (1, 2, 3, ... without gaps), `prev` (record n-1's hash; GENESIS for
the first) and `hash` = SHA-256 over `prev | seq | _id | raw`, where `raw` is the
AuditEvent's JSON exactly as served (the plaintext: the stored blob is sealed, and opened
here with the keyring). Changing, removing or reordering any record breaks the link at
that record or the next one.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fhirserver.phi.cipher import RecordCipher, TamperedRecord, is_sealed, record_context

GENESIS = "0" * 64


def record_hash(prev: str, seq: int, rid: str, raw: bytes) -> str:
    """The hash of one record given its predecessor's hash."""
    h = hashlib.sha256()
    h.update(prev.encode("ascii"))
    h.update(b"|")
    h.update(str(seq).encode("ascii"))
    h.update(b"|")
    h.update(rid.encode("utf-8"))
    h.update(b"|")
    h.update(raw)
    return h.hexdigest()


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of walking the chain."""

    ok: bool
    count: int  # records checked
    head_seq: int
    head_hash: str
    broken_seq: int | None = None
    reason: str = ""

    def message(self) -> str:
        """One line for the operator."""
        if self.ok:
            return f"ok {self.count} records (head seq {self.head_seq}, hash {self.head_hash})"
        return f"broken at seq {self.broken_seq}: {self.reason}"


def opener(cipher: RecordCipher | None) -> Callable[[str, bytes], bytes]:
    """How `verify_records` gets a record's plaintext: open sealed blobs with `cipher`."""

    def open_raw(rid: str, raw: bytes) -> bytes:
        if not is_sealed(raw):
            return raw
        if cipher is None:
            raise TamperedRecord("the record is sealed and no keyring was given")
        return cipher.open(record_context("AuditEvent", rid, 1), raw)

    return open_raw


async def verify_records(
    records: AsyncIterator[Mapping[str, Any]],
    open_raw: Callable[[str, bytes], bytes],
    head: tuple[int, str] | None = None,
) -> VerifyResult:
    """Walk records in ascending `seq` order and report the first broken link; with `head`
    (the (seq, hash) the trail's head document names), newest records removed too."""
    prev, expected, count = GENESIS, 1, 0

    def broken(reason: str) -> VerifyResult:
        return VerifyResult(False, count, expected - 1, prev, expected, reason)

    async for doc in records:
        seq = doc.get("seq")
        if seq != expected:
            return broken(f"record seq {expected} is missing (next record has seq {seq})")
        raw = doc.get("raw")
        rid = doc.get("_id")
        if not isinstance(raw, bytes) or not isinstance(rid, str):
            return broken("record is malformed")
        if doc.get("prev") != prev:
            return broken("prev does not match the hash of the record before")
        try:
            plain = open_raw(rid, raw)
        except TamperedRecord:
            return broken("sealed content fails authentication (record modified, or sealed "
                          "under a key this keyring does not have)")
        digest = record_hash(prev, expected, rid, plain)
        if doc.get("hash") != digest:
            return broken("content does not match its hash (record modified)")
        prev, expected, count = digest, expected + 1, count + 1
    if head is not None and head != (expected - 1, prev):
        if head[0] >= expected:
            return broken(f"records {expected}..{head[0]} are missing (the head names "
                          f"seq {head[0]})")
        return broken(f"the head document names seq {head[0]}, which does not match the "
                      "trail")
    return VerifyResult(True, count, expected - 1, prev)
