"""Migrations on the embedded store: drop-then-create, idempotence, sparse indexes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from fhirserver.phi.blind import BLINDED
from fhirserver.storage.migrations import apply_migrations, migration_files

Doc = dict[str, Any]

SPARSE = {
    ("Appointment", "idx.identifier.c_1"), ("Appointment", "idx.reason-code_1"),
    ("Slot", "idx.identifier.c_1"), ("Schedule", "idx.identifier.c_1"),
    ("AuditEvent", "idx.policy_1"), ("AuditEvent", "idx.who.c_1"),
    ("AuditEvent", "idx.entity-identifier.c_1"),
}


async def test_optional_value_indexes_end_up_sparse(mongo_db: AsyncDatabase[Doc]) -> None:
    applied = await apply_migrations(mongo_db)
    assert applied == [p.stem for p in migration_files()]
    for collection, name in SPARSE:
        info = await mongo_db[collection].index_information()
        assert info[name].get("sparse") is True, (collection, name)
    assert await apply_migrations(mongo_db) == []  # recorded: nothing runs twice


async def test_phi_parameters_are_indexed_only_by_their_tokens(
    mongo_db: AsyncDatabase[Doc],
) -> None:
    # A blinded parameter's idx value is a flat token list: an index on a plaintext
    # subfield (idx.name.n) would hold a null per record and serve no query.
    await apply_migrations(mongo_db)
    for rtype, params in BLINDED.items():
        fields = {f"idx.{field}" for field in params.values()}
        info = await mongo_db[rtype].index_information()
        keys = {key for index in info.values() for key, _ in index["key"]}
        assert not {k for k in keys if k.rsplit(".", 1)[0] in fields}, rtype
    patient = await mongo_db["Patient"].index_information()
    for param in ("identifier", "name", "family", "birthdate"):  # searched on the tokens
        assert f"idx.{param}_1" in patient, param


async def test_a_migration_replaces_an_index_and_tolerates_a_missing_one(
    mongo_db: AsyncDatabase[Doc], tmp_path: Path
) -> None:
    coll = mongo_db["Thing"]
    await coll.create_index([("x", 1)])
    (tmp_path / "0001_swap.json").write_text(json.dumps({
        "description": "x becomes sparse",
        "drop_indexes": [{"collection": "Thing", "name": "x_1"},
                         {"collection": "Thing", "name": "never_there_1"}],
        "indexes": [{"collection": "Thing", "keys": [["x", 1]], "options": {"sparse": True}}],
    }))
    assert await apply_migrations(mongo_db, tmp_path) == ["0001_swap"]
    assert (await coll.index_information())["x_1"]["sparse"] is True
    await coll.insert_many([{"_id": 1, "x": "a"}, {"_id": 2}])
    # The sparse index answers equality; a search for the missing value still finds the rest.
    assert [d["_id"] async for d in coll.find({"x": "a"})] == [1]
    assert [d["_id"] async for d in coll.find({"x": {"$exists": False}})] == [2]
    assert [d["_id"] async for d in coll.find({"x": None})] == [2]
