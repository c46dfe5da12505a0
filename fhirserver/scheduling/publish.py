"""SMART Scheduling Links bulk publication ($bulk-publish): a manifest plus NDJSON files of
Location, Schedule and Slot, so slot-discovery services can find public availability.

Slots are the generated ones (rules + explicit free Slots - blocked - claimed) over the
publication window, with status `free` or `busy` (SMART Scheduling Links knows only those
two; a live hold publishes as busy). Locations and Schedules honour `_since` (changed
since an instant); Slots are recomputed and always published whole.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import orjson

from fhirserver.scheduling.availability import Interval
from fhirserver.scheduling.repository import SchedulingRepository
from fhirserver.scheduling.rules import schedule_locations
from fhirserver.scheduling.slots import GeneratedSlots
from fhirserver.storage.resources import format_instant

Json = dict[str, Any]
FILE_TYPES = ("Location", "Schedule", "Slot")
PUBLISH_DAYS = 14


class Publisher:
    """Builds the manifest and streams the NDJSON files."""

    def __init__(self, repo: SchedulingRepository, slots: GeneratedSlots, base_url: str) -> None:
        self.repo = repo
        self.slots = slots
        self.base_url = base_url

    def manifest(self, now: datetime, since: datetime | None) -> Json:
        """The SMART Scheduling Links manifest: one output file per resource type."""
        query = f"?{urlencode({'_since': format_instant(since)})}" if since else ""
        return {
            "transactionTime": format_instant(now),
            "request": f"{self.base_url}/$bulk-publish{query}",
            "output": [
                {"type": t, "url": f"{self.base_url}/$bulk-publish/{t}.ndjson{query}"}
                for t in FILE_TYPES
            ],
            "error": [],
        }

    async def _schedules(self, since: datetime | None) -> list[Json]:
        params = [("active:not", "false")]
        if since is not None:
            params.append(("_lastUpdated", f"gt{format_instant(since)}"))
        return await self.repo.search("Schedule", params)

    async def _locations(self, since: datetime | None) -> list[Json]:
        schedules = await self._schedules(None)
        ids = {loc for s in schedules for loc in schedule_locations(s)}
        found = await self.repo.locations_with_ancestors(ids)
        published = [loc for lid, loc in sorted(found.items()) if lid in ids]
        if since is None:
            return published
        stamp = format_instant(since)
        return [loc for loc in published if loc.get("meta", {}).get("lastUpdated", "") > stamp]

    async def ndjson(
        self, rtype: str, now: datetime, since: datetime | None
    ) -> AsyncIterator[bytes]:
        """The lines of one output file (rtype must be one of FILE_TYPES)."""
        if rtype == "Location":
            for loc in await self._locations(since):
                yield orjson.dumps(loc) + b"\n"
        elif rtype == "Schedule":
            for schedule in await self._schedules(since):
                yield orjson.dumps(published_schedule(schedule)) + b"\n"
        else:
            window = Interval(now, now + timedelta(days=PUBLISH_DAYS))
            for schedule in await self._schedules(None):
                slots = await self.slots.for_schedule(schedule, window, now, include_taken=True)
                for slot in slots:
                    status = "free" if slot["status"] == "free" else "busy"
                    yield orjson.dumps({**slot, "status": status}) + b"\n"


def published_schedule(schedule: Json) -> Json:
    """The Schedule as published: SMART Scheduling Links clients find its place through a
    Location actor, so every location it offers time at comes first among the actors."""
    locs = [{"reference": f"Location/{lid}"} for lid in schedule_locations(schedule)]
    others = [a for a in schedule.get("actor", []) if a not in locs]
    return {**schedule, "actor": [*locs, *others]}
