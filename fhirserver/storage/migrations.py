"""Ordered, idempotent index/collection migrations from migrations/*.json.

Each file declares indexes to drop (`drop_indexes`: collection and index name; a missing
one is skipped) and indexes to create (`indexes`, `search_indexes`), in that order, so an
index can be recreated with other options. Applying a file twice is harmless and each
applied file is recorded in `_migrations`. Run on start and by `fhirserver migrate`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

from fhirserver.fhir.searchparams import get_param
from fhirserver.paths import project_dir

log = logging.getLogger(__name__)

Doc = dict[str, Any]

INDEX_NOT_FOUND = 27

# Which subfield of an idx value a search on that parameter type filters on.
_SEARCH_FIELD = {
    "token": ".c",
    "string": ".n",
    "date": ".lo",
    "reference": "",
    "uri": "",
    "number": "",
    "quantity": ".v",
}


def search_index_keys(resource_type: str, params: list[str]) -> list[tuple[str, int]]:
    """Index keys for a compound search index over the given parameters."""
    keys: list[tuple[str, int]] = []
    for name in params:
        if name == "_lastUpdated":
            keys.append(("lu", 1))
            continue
        param = get_param(resource_type, name)
        if param is None or param.type not in _SEARCH_FIELD:
            raise ValueError(f"no indexable search parameter {resource_type}.{name}")
        keys.append((f"idx.{name}{_SEARCH_FIELD[param.type]}", 1))
    return keys


def _index_specs(migration: Doc) -> list[tuple[str, list[tuple[str, int]], Doc]]:
    specs: list[tuple[str, list[tuple[str, int]], Doc]] = []
    for ix in migration.get("indexes", []):
        keys = [(k, int(d)) for k, d in ix["keys"]]
        specs.append((ix["collection"], keys, dict(ix.get("options", {}))))
    for rtype, param_lists in migration.get("search_indexes", {}).items():
        for params in param_lists:
            specs.append((rtype, search_index_keys(rtype, params), {}))
    return specs


def migration_files(directory: Path | None = None) -> list[Path]:
    """The migration files in apply order."""
    return sorted((directory or project_dir("migrations")).glob("[0-9][0-9][0-9][0-9]_*.json"))


async def _drop_index(db: AsyncDatabase[Doc], collection: str, name: str) -> None:
    try:
        await db[collection].drop_index(name)
    except OperationFailure as exc:
        if exc.code != INDEX_NOT_FOUND and "not found" not in str(exc).lower():
            raise


async def apply_migrations(db: AsyncDatabase[Doc], directory: Path | None = None) -> list[str]:
    """Apply every migration not yet recorded; returns the names applied now."""
    applied: list[str] = []
    done = {d["_id"] async for d in db["_migrations"].find({}, {"_id": 1})}
    for path in migration_files(directory):
        name = path.stem
        if name in done:
            continue
        migration = orjson.loads(path.read_bytes())
        for drop in migration.get("drop_indexes", []):
            await _drop_index(db, drop["collection"], drop["name"])
        for collection, keys, options in _index_specs(migration):
            await db[collection].create_index(keys, **options)
        await db["_migrations"].update_one(
            {"_id": name}, {"$set": {"description": migration.get("description", "")}}, upsert=True
        )
        log.info("applied migration %s", name)
        applied.append(name)
    return applied
