"""What scheduling reads from the FHIR store: schedules, locations, slots, roles, patients.

Reads go through the same search machinery as the REST API (parse_search -> filter), so a
criterion means exactly what it means in a FHIR search.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import orjson

from fhirserver.fhir.search import parse_search
from fhirserver.fhir.searching import Searcher
from fhirserver.storage.resources import ResourceStore, format_instant

Json = dict[str, Any]
Params = list[tuple[str, str]]

# Hard cap on resources one scheduling read may pull (a $find over a whole system).
MAX_READ = 20_000


class SchedulingRepository:
    """Loads scheduling inputs as JSON dicts."""

    def __init__(self, store: ResourceStore, searcher: Searcher) -> None:
        self.store = store
        self.searcher = searcher

    async def search(self, rtype: str, params: Params, limit: int = MAX_READ) -> list[Json]:
        """Resources of `rtype` matching FHIR search parameters (strict parsing)."""
        spec = parse_search(rtype, params, strict=True, blind=self.store.blind)
        query = await self.searcher.resolve_filter(spec, strict=True)
        docs = await self.store.find(rtype, query, projection={"raw": 1}, limit=limit)
        return [orjson.loads(d["raw"]) for d in docs]

    async def search_ids(self, rtype: str, params: Params) -> set[str]:
        """Ids of matching resources."""
        spec = parse_search(rtype, params, strict=True, blind=self.store.blind)
        query = await self.searcher.resolve_filter(spec, strict=True)
        return set(await self.store.ids(rtype, query, MAX_READ))

    async def by_ids(self, rtype: str, ids: Iterable[str]) -> dict[str, Json]:
        """Resources by id (missing ones are simply absent)."""
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        docs = await self.store.find(rtype, {"_id": {"$in": wanted}}, projection={"raw": 1})
        return {d["_id"]: orjson.loads(d["raw"]) for d in docs}

    async def read(self, rtype: str, rid: str) -> Json | None:
        """One resource or None."""
        found = await self.by_ids(rtype, [rid])
        return found.get(rid)

    async def locations_with_ancestors(self, ids: Iterable[str]) -> dict[str, Json]:
        """Locations by id plus every `partOf` ancestor (time zones and hours live there)."""
        found: dict[str, Json] = {}
        pending = set(ids)
        for _ in range(8):  # partOf chains are short; the bound guards against cycles
            pending -= set(found)
            if not pending:
                break
            batch = await self.by_ids("Location", pending)
            found.update(batch)
            pending = {
                str(loc["partOf"]["reference"]).split("/")[-1]
                for loc in batch.values()
                if isinstance(loc.get("partOf"), dict) and loc["partOf"].get("reference")
            }
        return found

    async def explicit_slots(
        self, schedule_ids: Iterable[str], start: datetime, end: datetime
    ) -> dict[str, list[Json]]:
        """Stored Slots per schedule overlapping [start, end)."""
        ids = sorted(set(schedule_ids))
        out: dict[str, list[Json]] = {i: [] for i in ids}
        if not ids:
            return out
        slots = await self.search(
            "Slot",
            [
                ("schedule", ",".join(f"Schedule/{i}" for i in ids)),
                ("start", f"lt{format_instant(end)}"),
                ("end", f"gt{format_instant(start)}"),
            ],
        )
        for slot in slots:
            sid = str(slot["schedule"]["reference"]).split("/")[-1]
            out.setdefault(sid, []).append(slot)
        return out
