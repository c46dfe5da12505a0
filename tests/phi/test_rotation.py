"""`fhirserver keys rotate` while a client keeps reading and writing; legacy plaintext;
`keys retire`; attaching to a running server's embedded store."""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from fhirserver.audit.cli import verify_database
from fhirserver.auth.service import AuthService
from fhirserver.context import full_indexer
from fhirserver.phi.rotation import keys_in_use
from fhirserver.scheduling.clock import SystemClock
from fhirserver.storage.embedded import DataDirInUse, EmbeddedServers, mongodb_uri_for
from fhirserver.storage.mongo import Mongo
from fhirserver.storage.resources import ResourceStore
from tests.api.factories import uid
from tests.phi.conftest import FHIR, PhiServer, create, mongo_hits, phi_settings
from tests.thread_server import serve_in_thread


@pytest.fixture(scope="module")
def rot_server(embedded: EmbeddedServers, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[PhiServer]:
    keyring = tmp_path_factory.mktemp("rot") / "phi-keyring.json"
    settings = phi_settings(embedded, keyring)
    with serve_in_thread(settings):
        yield PhiServer(settings.base_url(), settings, keyring)


async def cli(server: PhiServer, *args: str) -> tuple[int, str, str]:
    """Run `fhirserver keys ...` as a real subprocess on the server's database."""
    s = server.settings
    assert s.mongodb_uri
    env = {**os.environ, "MONGODB_URI": s.mongodb_uri, "FHIRSERVER_DB_NAME": s.db_name,
           "FHIRSERVER_PHI_KEYRING": str(server.keyring),
           "FHIRSERVER_PHI_KEYRING_CHECK_SECONDS": "0.2"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fhirserver.cli", "keys", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=240)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def write_legacy(server: PhiServer, family: str) -> str:
    """A Patient stored the way the server did before encryption (plaintext raw and idx)."""
    s = server.settings
    assert s.mongodb_uri
    mongo = Mongo(s.mongodb_uri, s.db_name)
    try:
        plain = ResourceStore(mongo.db, full_indexer)  # no PhiCodec: the old code path
        stored = await mongo.transaction(lambda session: plain.create(
            {"resourceType": "Patient", "name": [{"family": family}]}, session))
        return stored.id
    finally:
        await mongo.close()


async def test_rotate_while_serving(rot_server: PhiServer) -> None:
    tag = uid()
    legacy_family = f"Legacy{tag}"
    legacy = await write_legacy(rot_server, legacy_family)
    await write_users(rot_server, tag)
    async with httpx.AsyncClient(base_url=rot_server.base_url, timeout=60) as client:
        ids = [await create(client, {"resourceType": "Patient", "name": [{"family": f"R{tag}"}],
                                     "birthDate": "1971-02-03"}) for _ in range(30)]
        # legacy plaintext is served; the startup pass or a rotation seals it
        assert (await client.get(f"/Patient/{legacy}")).json()["name"][0]["family"] == \
            legacy_family
        old_kid = rot_server.codec().cipher.active_kid
        errors: list[str] = []
        done = asyncio.Event()
        counts = {"reads": 0, "writes": 0, "after": 0}

        async def traffic() -> None:
            rng = random.Random(7)
            while not done.is_set():
                rid = rng.choice(ids)
                r = await client.get(f"/Patient/{rid}")
                if r.status_code != 200 or r.json()["name"][0]["family"] != f"R{tag}":
                    errors.append(f"read {rid}: {r.status_code} {r.text[:200]}")
                counts["reads"] += 1
                body = r.json()
                body["telecom"] = [{"system": "phone", "value": f"555-{counts['writes']}"}]
                w = await client.put(f"/Patient/{rid}", json=body, headers=FHIR)
                if w.status_code != 200:
                    errors.append(f"update {rid}: {w.status_code} {w.text[:200]}")
                if counts["writes"] % 5 == 0:
                    ids.append(await create(client, {"resourceType": "Patient",
                                                     "name": [{"family": f"R{tag}"}]}))
                s = await client.get("/Patient", params={"family": f"R{tag}", "_count": 5})
                if s.status_code != 200 or not s.json().get("entry"):
                    errors.append(f"search: {s.status_code} {s.text[:200]}")
                counts["writes"] += 1

        task = asyncio.create_task(traffic())
        code, out, err = await cli(rot_server, "rotate", "--batch", "20")
        assert code == 0, err
        report = json.loads(out.strip().splitlines()[-1])
        new_kid = report["active"]
        # records the traffic rewrote meanwhile were sealed under the new key by the server
        assert new_kid != old_kid and report["resealed"]["Patient"] > 0
        # the audit trail and login users' display names are re-sealed too
        assert report["resealed"]["AuditEvent"] > 0 and report["resealed"]["auth_users"] == 2
        assert report["resealed"]["auth_keys"] == 2  # the server's and a legacy plaintext one
        before = counts["writes"]
        deadline = time.monotonic() + 60
        while counts["writes"] < before + 10:  # keep going a little under the new key
            assert time.monotonic() < deadline and not task.done()
            await asyncio.sleep(0.05)
        done.set()
        await task
        assert errors == []
        assert counts["reads"] > 10

        assert rot_server.settings.mongodb_uri
        mc: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(rot_server.settings.mongodb_uri)
        try:
            used = await keys_in_use(mc[rot_server.settings.db_name])
        finally:
            await mc.close()
        assert set(used) == {new_kid}, used  # every record, history included
        # the legacy record is sealed and now found through the blind index
        found = (await client.get("/Patient", params={"family": legacy_family})).json()
        assert [e["resource"]["id"] for e in found["entry"]] == [legacy]
        assert await mongo_hits(rot_server.settings, [legacy_family]) == []

        # the old key goes once nothing uses it; the active one never
        code, _, err = await cli(rot_server, "retire", new_kid)
        assert code == 1 and "active" in err
        code, out, err = await cli(rot_server, "retire", old_kid)
        assert code == 0, err
        code, out, _ = await cli(rot_server, "status")
        status = json.loads(out)
        assert status["keys"] == [new_kid] and set(status["records_by_key"]) == {new_kid}
        for rid in [*ids[:10], legacy]:
            assert (await client.get(f"/Patient/{rid}")).status_code == 200
            hist = await client.get(f"/Patient/{rid}/_history")
            assert hist.status_code == 200
        trail = await client.get("/AuditEvent", params={"patient": legacy})
        assert trail.status_code == 200 and trail.json()["entry"]
    # the chain covers the plaintext: re-sealing left it intact
    cipher = rot_server.codec().cipher
    verified = await verify_database(rot_server.settings.mongodb_uri, rot_server.settings.db_name,
                                     cipher)
    assert verified.ok and verified.count > 30, verified.message()
    await assert_user_names(rot_server, tag)


async def write_users(server: PhiServer, tag: str) -> None:
    """A user written by this server (sealed) and one as written before sealing (plain)."""
    settings = server.settings
    assert settings.mongodb_uri and settings.redis_url
    auth = AuthService.start(settings, settings.mongodb_uri, settings.redis_url, SystemClock())
    try:
        auth.add_user(f"sealed-{tag}", "auditor", "a long passphrase", None, f"Sealed{tag}")
        auth.store.users.insert_one({"_id": f"plain-{tag}", "role": "staff",
                                     "name": f"Plain{tag}", "disabled": False})
        # a signing key as written before sealing: the private JWK in the clear
        (current,) = auth.store.signing_keys()
        auth.store.keys.insert_one({**current, "_id": f"legacy-{tag}", "status": "previous",
                                    "k": None})
    finally:
        auth.close()


async def assert_user_names(server: PhiServer, tag: str) -> None:
    """Both users' names read back, and neither is in the clear in the store; no private
    signing key is either, and both keys still load."""
    settings = server.settings
    assert settings.mongodb_uri and settings.redis_url
    auth = AuthService.start(settings, settings.mongodb_uri, settings.redis_url, SystemClock())
    try:
        for kind in ("sealed", "plain"):
            user = auth.store.get_user(f"{kind}-{tag}")
            assert user is not None and user.name == f"{kind.capitalize()}{tag}"
        keys = auth.store.signing_keys()
        assert {k["_id"] for k in keys} >= {f"legacy-{tag}"} and all("d" in k["jwk"] for k in keys)
        raw = list(auth.store.keys.find({}))
        assert all("jwk" not in k and k["private"][:3] == b"\x00P1" for k in raw)
    finally:
        auth.close()
    assert await mongo_hits(settings, [f"Sealed{tag}", f"Plain{tag}"]) == []


def test_keys_commands_attach_to_a_running_embedded_store(tmp_path: Path) -> None:
    servers = EmbeddedServers(tmp_path, with_redis=False, cache_size="64M")
    servers.start()
    try:
        with pytest.raises(DataDirInUse), mongodb_uri_for(None, tmp_path):
            pass
        with mongodb_uri_for(None, tmp_path, attach=True) as uri:
            assert uri == servers.mongodb_uri
    finally:
        servers.stop()
    assert not (tmp_path / "embedded-mongo.uri").exists()
