"""Write-time checks of availability: rules, free Slots and visit durations (422 on error).

`RuleChecks.on_write` is registered with `FhirService.add_write_hook`, so every create,
update or patch (alone or in a transaction Bundle) passes it inside its own transaction:

- a Schedule's ``availability-rule`` extensions must parse (docs/scheduling.md); each
  rule's Location (its ``location``, else the Schedule's first Location actor) must exist,
  and every day's block (minus breaks) must lie inside that Location's hoursOfOperation
  (intersected along its ``partOf`` chain, local wall clock of its zone);
- a ``free`` Slot must lie inside the operating hours of the Location the engine places
  it at (`rules.free_slot_location`); a Schedule without one restricts nothing;
- a HealthcareService's ``visit-duration`` extensions must parse.

A Location without hoursOfOperation (anywhere on its chain) is always open. An update that
leaves the checked parts unchanged is not re-checked, so a Schedule whose Location was
later narrowed can still be deactivated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from pymongo.asynchronous.client_session import AsyncClientSession

from fhirserver.fhir.errors import Unprocessable
from fhirserver.scheduling.availability import render_local
from fhirserver.scheduling.hours import (
    chain_hours,
    chain_timezone,
    hours_spans,
    location_chain,
    ref_id,
    subtract,
)
from fhirserver.scheduling.rules import (
    RULE_URL,
    AvailabilityRule,
    RuleIssue,
    as_unprocessable,
    check_service,
    default_location,
    free_slot_location,
    hours_issues,
    parse_rules,
)
from fhirserver.storage.resources import ResourceStore

Json = Mapping[str, Any]
Doc = dict[str, Any]
LOCATION = "Location"
_MAX_DEPTH = 8  # partOf chains are short; the bound guards against cycles


def _rule_extensions(schedule: Json) -> list[Any]:
    return [
        e for e in schedule.get("extension", []) if isinstance(e, dict) and e.get("url") == RULE_URL
    ]


def _instant(value: Any) -> int | None:
    """Epoch seconds of a FHIR instant with offset; None when absent or malformed."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return int(parsed.timestamp()) if parsed.tzinfo is not None else None


def _utc(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _location_path(schedule: Json, rule: AvailabilityRule) -> str:
    """FHIRPath of where a rule's Location comes from (its sub-extension or the actor)."""
    if rule.location_id is not None:
        ext = schedule.get("extension", [])[rule.index]
        for j, sub in enumerate(ext.get("extension", [])):
            if isinstance(sub, dict) and sub.get("url") == "location":
                return f"Schedule.extension[{rule.index}].extension[{j}]"
        return f"Schedule.extension[{rule.index}]"
    for k, actor in enumerate(schedule.get("actor", [])):
        if ref_id(actor) is not None:
            return f"Schedule.actor[{k}]"
    return f"Schedule.extension[{rule.index}]"


class RuleChecks:
    """The availability write checks (a FhirService write hook); reads in the write's session."""

    def __init__(self, store: ResourceStore) -> None:
        self.store = store

    async def on_write(
        self,
        resource_type: str,
        old: Json | None,
        new: Json | None,
        session: AsyncClientSession,
    ) -> None:
        """FhirService write hook: raise Unprocessable (422) to refuse a Schedule with a
        malformed or out-of-hours rule, a free Slot outside operating hours, or a
        HealthcareService with a malformed visit-duration. Deletes pass."""
        if new is None:
            return
        if resource_type == "Schedule":
            await self.check_schedule(new, old, session)
        elif resource_type == "Slot":
            await self.check_slot(new, old, session)
        elif resource_type == "HealthcareService":
            check_service(dict(new))

    async def check_schedule(
        self, schedule: Json, old: Json | None, session: AsyncClientSession
    ) -> None:
        """Refuse malformed rules, rules at unknown Locations and rules outside hours."""
        exts = _rule_extensions(schedule)
        if not exts:
            return
        if (
            old is not None
            and _rule_extensions(old) == exts
            and old.get("actor") == schedule.get("actor")
        ):
            return
        body = dict(schedule)
        rules, issues = parse_rules(body)
        if issues:
            raise as_unprocessable(issues)
        wanted = {loc for r in rules if (loc := r.location_id or default_location(body))}
        locations = await self.locations(wanted, session)
        for rule in rules:
            loc = rule.location_id or default_location(body)
            if loc is not None and loc not in locations:
                issues.append(
                    RuleIssue(
                        _location_path(body, rule),
                        f"availability rule location Location/{loc} does not exist",
                    )
                )
        if not issues:
            for rule in rules:
                issues.extend(hours_issues(rule, body, locations))
        if issues:
            raise as_unprocessable(issues)

    async def check_slot(self, slot: Json, old: Json | None, session: AsyncClientSession) -> None:
        """Refuse a free Slot whose time lies outside its Schedule's operating hours."""
        if slot.get("status") != "free":
            return
        keys = ("status", "start", "end", "schedule")
        if old is not None and all(old.get(k) == slot.get(k) for k in keys):
            return
        start, end = _instant(slot.get("start")), _instant(slot.get("end"))
        schedule_id = ref_id(slot.get("schedule"), "Schedule")
        if start is None or end is None or end <= start or schedule_id is None:
            return
        docs = await self.store.find(
            "Schedule", {"_id": schedule_id}, projection={"raw": 1}, session=session
        )
        if not docs:
            return
        schedule = orjson.loads(docs[0]["raw"])
        rules, _ = parse_rules(schedule)
        loc = free_slot_location(schedule, rules)
        if loc is None:
            return
        chain = location_chain(loc, await self.locations([loc], session))
        hours = chain_hours(chain)
        if hours is None:
            return
        tz = chain_timezone(chain) or "UTC"
        outside = subtract([(start, end)], hours_spans(hours, tz, start, end) or [])
        if not outside:
            return
        shown = ", ".join(
            f"{render_local(_utc(s), tz)} to {render_local(_utc(e), tz)}" for s, e in outside
        )
        raise Unprocessable(
            f"a free Slot of Schedule/{schedule_id} must lie inside the operating hours of "
            f"Location/{loc} ({tz}); {shown} is outside them",
            expression=["Slot.start", "Slot.end"],
        )

    async def locations(self, ids: Iterable[str], session: AsyncClientSession) -> dict[str, Doc]:
        """Locations by id plus their ``partOf`` ancestors, read in the write's session."""
        found: dict[str, Doc] = {}
        pending = set(ids)
        for _ in range(_MAX_DEPTH):
            pending -= set(found)
            if not pending:
                break
            docs = await self.store.find(
                LOCATION, {"_id": {"$in": sorted(pending)}}, projection={"raw": 1}, session=session
            )
            batch = {str(d["_id"]): orjson.loads(d["raw"]) for d in docs}
            found.update(batch)
            pending = {p for loc in batch.values() if (p := ref_id(loc.get("partOf"))) is not None}
        return found
