"""The hash chain: unbroken under concurrency (one process, and two servers on one
database), verified by `fhirserver audit verify`, which finds a tampered record."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pymongo import MongoClient

from fhirserver.audit.cli import verify_database
from fhirserver.config import Settings
from fhirserver.phi.cipher import record_context
from fhirserver.phi.codec import PhiCodec
from fhirserver.storage.embedded import EmbeddedServers
from tests.api.factories import patient
from tests.audit.conftest import AUDIT_DB, AuditServer
from tests.thread_server import serve_in_thread, settings_on


async def _new_patient(client: httpx.AsyncClient) -> str:
    r = await client.post("/Patient", json=patient())
    assert r.status_code == 201, r.text
    rid: str = r.json()["id"]
    return rid


def _cipher(settings: Settings) -> Any:
    return PhiCodec.from_settings(settings).cipher


async def test_parallel_reads_keep_the_chain_unbroken(
    audit_server: AuditServer, client: httpx.AsyncClient, embedded: EmbeddedServers
) -> None:
    pid = await _new_patient(client)
    assert embedded.mongodb_uri
    cipher = PhiCodec.from_settings(audit_server.settings).cipher
    before = await verify_database(embedded.mongodb_uri, AUDIT_DB, cipher)
    assert before.ok, before.message()
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(base_url=audit_server.base_url, limits=limits, timeout=120) as c:
        responses = await asyncio.gather(*[c.get(f"/Patient/{pid}") for _ in range(100)])
    assert all(r.status_code == 200 for r in responses)
    after = await verify_database(embedded.mongodb_uri, AUDIT_DB, cipher)
    assert after.ok, after.message()
    assert after.count >= before.count + 100
    r = await client.get("/AuditEvent", params={"patient": pid, "subtype": "read", "_count": "0"})
    assert r.json()["total"] == 100


def _verify_cli(data_dir: Path, db: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URI", "REDIS_URL")}
    env["FHIRSERVER_DB_NAME"] = db
    return subprocess.run(
        [sys.executable, "-m", "fhirserver.cli", "audit", "verify", "--data-dir", str(data_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.timeout(300)
async def test_verify_command_on_the_embedded_store_detects_tampering(tmp_path: Path) -> None:
    db = "fhirserver"
    store = EmbeddedServers(tmp_path, cache_size="128M")
    store.start()
    try:
        settings = settings_on(store, db, data_dir=tmp_path)
        with serve_in_thread(settings):
            async with httpx.AsyncClient(base_url=settings.base_url(), timeout=60) as c:
                pid = await _new_patient(c)
                for _ in range(5):
                    assert (await c.get(f"/Patient/{pid}")).status_code == 200
    finally:
        store.stop()

    ok = _verify_cli(tmp_path, db)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("ok 6 records"), ok.stdout

    # An operator with database access and the keyring changes one record's outcome
    # behind the API, and re-seals it so that it still opens.
    cipher = _cipher(settings)
    store = EmbeddedServers(tmp_path, with_redis=False, cache_size="128M")
    store.start()
    try:
        assert store.mongodb_uri
        with MongoClient(store.mongodb_uri) as mc:
            coll = mc[db]["AuditEvent"]
            doc: dict[str, Any] = coll.find_one({"seq": 3}) or {}
            context = record_context("AuditEvent", doc["_id"], 1)
            body = orjson.loads(cipher.open(context, doc["raw"]))
            body["outcome"] = "4"
            sealed, _ = cipher.seal(context, orjson.dumps(body))
            coll.update_one({"_id": doc["_id"]}, {"$set": {"raw": sealed}})
            # Without the keyring, flipping one byte of another record's blob.
            other: dict[str, Any] = coll.find_one({"seq": 5}) or {}
            blob = bytearray(other["raw"])
            blob[-1] ^= 1
            coll.update_one({"_id": other["_id"]}, {"$set": {"raw": bytes(blob)}})
    finally:
        store.stop()

    broken = _verify_cli(tmp_path, db)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "broken at seq 3" in broken.stdout and "modified" in broken.stdout


async def test_verify_reports_a_sealed_blob_that_fails_authentication(
    embedded: EmbeddedServers,
) -> None:
    db = "audit_flipped"
    settings = settings_on(embedded, db)
    with serve_in_thread(settings):
        async with httpx.AsyncClient(base_url=settings.base_url(), timeout=60) as c:
            pid = await _new_patient(c)
            await c.get(f"/Patient/{pid}")
    assert embedded.mongodb_uri
    with MongoClient(embedded.mongodb_uri) as mc:
        coll = mc[db]["AuditEvent"]
        doc: dict[str, Any] = coll.find_one({"seq": 2}) or {}
        blob = bytearray(doc["raw"])
        blob[-1] ^= 1
        coll.update_one({"_id": doc["_id"]}, {"$set": {"raw": bytes(blob)}})
    result = await verify_database(embedded.mongodb_uri, db, _cipher(settings))
    assert not result.ok and result.broken_seq == 2
    assert "fails authentication" in result.reason


async def test_verify_detects_a_removed_record(embedded: EmbeddedServers) -> None:
    db = "audit_removed"
    settings = settings_on(embedded, db)
    with serve_in_thread(settings):
        async with httpx.AsyncClient(base_url=settings.base_url(), timeout=60) as c:
            pid = await _new_patient(c)
            for _ in range(3):
                await c.get(f"/Patient/{pid}")
    assert embedded.mongodb_uri
    with MongoClient(embedded.mongodb_uri) as mc:
        mc[db]["AuditEvent"].delete_one({"seq": 2})
    result = await verify_database(embedded.mongodb_uri, db, _cipher(settings))
    assert not result.ok and result.broken_seq == 2 and "missing" in result.reason


async def test_two_busy_servers_keep_one_chain_and_removed_newest_records_are_caught(
    embedded: EmbeddedServers,
) -> None:
    """Two servers appending under load share one head (no append starves), and removing
    the newest records is caught against the head document."""
    db = "audit_truncated"
    a, b = settings_on(embedded, db), settings_on(embedded, db)
    with serve_in_thread(a), serve_in_thread(b):
        async with (
            httpx.AsyncClient(base_url=a.base_url(), timeout=120) as ca,
            httpx.AsyncClient(base_url=b.base_url(), timeout=120) as cb,
        ):
            pid = await _new_patient(ca)
            await cb.get(f"/Patient/{pid}")  # each server's routes once before the race

            async def stream(c: httpx.AsyncClient) -> None:
                for _ in range(30):
                    assert (await c.get(f"/Patient/{pid}")).status_code == 200

            await asyncio.gather(*(stream(c) for c in (ca, cb, ca, cb, ca, cb)))
    assert embedded.mongodb_uri
    whole = await verify_database(embedded.mongodb_uri, db, _cipher(a))
    assert whole.ok and whole.count == 182, whole.message()
    with MongoClient(embedded.mongodb_uri) as mc:
        mc[db]["AuditEvent"].delete_many({"seq": {"$gte": 181}})
    cut = await verify_database(embedded.mongodb_uri, db, _cipher(a))
    assert not cut.ok and "181..182 are missing" in cut.reason, cut.message()
