"""Micro-benchmark: reading one Patient through the ResourceStore, plaintext vs sealed.

`python -m bench.phi_read [N]`: an embedded SecantusDB in a temp dir; the same Patient
stored by a store without and with the PhiCodec; mean time per `store.read` and per
search-page `store.find`, and the AES-GCM open alone. Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fhirserver.context import full_indexer
from fhirserver.phi.codec import PhiCodec
from fhirserver.phi.keyring import KeyringSource
from fhirserver.storage.embedded import EmbeddedServers
from fhirserver.storage.migrations import apply_migrations
from fhirserver.storage.mongo import Mongo
from fhirserver.storage.resources import ResourceStore

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "identifier": [{"system": "http://fhirserver.dev/sid/mrn", "value": "MRN-0001"}],
    "name": [{"family": "Lopez", "given": ["Maria", "Elena"]}],
    "telecom": [{"system": "phone", "value": "+1-555-0100"},
                {"system": "email", "value": "maria@example.org"}],
    "address": [{"line": ["12 Main Street"], "city": "Boston", "postalCode": "02110"}],
    "gender": "female",
    "birthDate": "1980-05-03",
}


async def _time(n: int, fn: Any) -> float:
    for _ in range(50):
        await fn()
    t = time.perf_counter()
    for _ in range(n):
        await fn()
    return (time.perf_counter() - t) / n * 1e6


async def main(n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        emb = EmbeddedServers(Path(d), with_redis=False, cache_size="128M")
        emb.start()
        try:
            assert emb.mongodb_uri
            mongo = Mongo(emb.mongodb_uri, "bench")
            await apply_migrations(mongo.db)
            codec = PhiCodec(KeyringSource.from_file(Path(d) / "k.json"))
            plain = ResourceStore(mongo.db, full_indexer)
            sealed = ResourceStore(mongo.db, full_indexer, codec)
            a = await mongo.transaction(lambda s: plain.create(PATIENT, s))
            b = await mongo.transaction(lambda s: sealed.create(PATIENT, s))
            raw_b = (await mongo.db["Patient"].find_one({"_id": b.id}))["raw"]  # type: ignore[index]
            out = {
                "read_plain_us": await _time(n, lambda: plain.read("Patient", a.id)),
                "read_sealed_us": await _time(n, lambda: sealed.read("Patient", b.id)),
                "find_plain_us": await _time(
                    n, lambda: plain.find("Patient", {"_id": a.id})),
                "find_sealed_us": await _time(
                    n, lambda: sealed.find("Patient", {"_id": b.id})),
            }
            t = time.perf_counter()
            for _ in range(n * 10):
                codec.open_raw("Patient", b.id, 1, raw_b)
            out["aes_gcm_open_us"] = (time.perf_counter() - t) / (n * 10) * 1e6
            t = time.perf_counter()
            for _ in range(n):
                sealed.indexer(PATIENT)
            out["index_sealed_us"] = (time.perf_counter() - t) / n * 1e6
            t = time.perf_counter()
            for _ in range(n):
                plain.indexer(PATIENT)
            out["index_plain_us"] = (time.perf_counter() - t) / n * 1e6
            out["raw_bytes"] = float(len(raw_b))
            await mongo.close()
            return {k: round(v, 1) for k, v in out.items()}
        finally:
            emb.stop()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))))
