"""$find: bookable time across every matching provider, earliest first.

The naive, always-correct path: select candidate Schedules with FHIR searches, expand
each Schedule's rules for the window, subtract live claims, rank. The claims index is
read fresh, so held or booked time is never offered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fhirserver.scheduling.availability import Candidate, Interval, bookable_slots, render_local
from fhirserver.scheduling.criteria import VISIT_TYPE_SYSTEM, FindCriteria
from fhirserver.scheduling.repository import SchedulingRepository
from fhirserver.scheduling.role_terms import accepts_new_patients, takes_any
from fhirserver.scheduling.rules import schedule_locations

if TYPE_CHECKING:
    from fhirserver.scheduling.index.service import IndexService

Json = dict[str, Any]
BusyLookup = Callable[[list[str], Interval], Awaitable[list[Interval]]]


@dataclass(frozen=True)
class Proposal:
    """One bookable time, with the Schedule it comes from and its claimed actors."""

    candidate: Candidate
    schedule: Json
    actors: tuple[str, ...]  # references the booking would claim
    established: bool  # the patient's own provider


def _refs(schedule: Json) -> list[str]:
    return [str(a.get("reference", "")) for a in schedule.get("actor", []) if a.get("reference")]


class Finder:
    """Computes proposals for $find and first-available booking."""

    def __init__(
        self, repo: SchedulingRepository, busy: BusyLookup, index: IndexService | None = None
    ) -> None:
        self.repo = repo
        self.busy = busy
        self.index = index

    async def _practitioner_filter(self, c: FindCriteria) -> set[str] | None:
        """Practitioner ids allowed by the criteria (None: no practitioner constraint)."""
        allowed: set[str] | None = set(c.practitioners) if c.practitioners else None

        def narrow(ids: set[str]) -> None:
            nonlocal allowed
            allowed = ids if allowed is None else allowed & ids

        if c.languages:
            narrow(
                await self.repo.search_ids(
                    "Practitioner", [("communication", ",".join(c.languages))]
                )
            )
        role_params: list[tuple[str, str]] = []
        if c.specialties:
            role_params.append(("specialty", ",".join(c.specialties)))
        if c.organizations:
            role_params.append(
                ("organization", ",".join(f"Organization/{o}" for o in c.organizations))
            )
        if role_params or c.accepting_new_patients or c.coverage:
            roles = await self.repo.search("PractitionerRole", role_params)
            established = {
                ref.split("/")[-1]
                for ref in await self._established(c.patient)
                if ref.startswith("Practitioner/")
            }
            narrow(
                {
                    str(r["practitioner"]["reference"]).split("/")[-1]
                    for r in roles
                    if r.get("practitioner") and _role_ok(r, c, established)
                }
            )
        return allowed

    async def _location_filter(self, c: FindCriteria) -> set[str] | None:
        """Location ids (hospitals and their rooms) allowed (None: anywhere)."""
        allowed: set[str] | None = None

        def narrow(ids: set[str]) -> None:
            nonlocal allowed
            allowed = ids if allowed is None else allowed & ids

        if c.locations:
            narrow(set(c.locations))
        if c.location_strings:
            found: set[str] = set()
            for text in c.location_strings:
                found |= await self.repo.search_ids("Location", [("address:contains", text)])
            narrow(found)
        if c.near is not None:
            lat, lng, km = c.near
            narrow(await self.repo.search_ids("Location", [("near", f"{lat}|{lng}|{km}|km")]))
        if allowed is None:
            return None
        rooms = (
            await self.repo.search_ids(
                "Location", [("partof", ",".join(f"Location/{i}" for i in sorted(allowed)))]
            )
            if allowed
            else set()
        )
        return allowed | rooms

    async def schedules(self, c: FindCriteria, only: set[str] | None = None) -> list[Json]:
        """Active Schedules that can serve the criteria (among `only` when given)."""
        if only is not None:
            wanted = set(c.visit_types)
            schedules = [
                s
                for s in (await self.repo.by_ids("Schedule", only)).values()
                if s.get("active") is not False
                and (
                    not wanted
                    or wanted
                    & {
                        str(cd.get("code"))
                        for cc in s.get("serviceType", [])
                        for cd in cc.get("coding", [])
                    }
                )
            ]
        else:
            params: list[tuple[str, str]] = [("active:not", "false")]
            if c.visit_types:
                params.append(("service-type", ",".join(c.visit_types)))
            schedules = await self.repo.search("Schedule", params)
        practitioners = await self._practitioner_filter(c)
        if practitioners is not None:
            roles = (
                await self.repo.search(
                    "PractitionerRole",
                    [
                        (
                            "practitioner",
                            ",".join(f"Practitioner/{p}" for p in sorted(practitioners)),
                        )
                    ],
                )
                if practitioners
                else []
            )
            ok = {f"Practitioner/{p}" for p in practitioners} | {
                f"PractitionerRole/{r['id']}" for r in roles
            }
            schedules = [s for s in schedules if ok & set(_refs(s))]
        return schedules

    async def proposals(
        self,
        c: FindCriteria,
        now: datetime,
        limit: int,
        *,
        only: set[str] | None = None,
        naive: bool = False,
    ) -> list[Proposal]:
        """Up to `limit` proposals: the patient's established provider first, then by start.

        From the availability index when there is one (a read model: fast, may lag a
        write of another process by milliseconds); `naive`, or a question the index cannot
        answer, computes them here from the database (`only`: just these Schedule ids).
        """
        if self.index is not None and not naive:
            found = await self.index.proposals(c, now, limit, self._established, only)
            if found is not None:
                return found
        return await self.naive_proposals(c, now, limit, only=only)

    async def naive_proposals(
        self,
        c: FindCriteria,
        now: datetime,
        limit: int,
        *,
        only: set[str] | None = None,
        ignore_claims: bool = False,
    ) -> list[Proposal]:
        """The reference path: expand each candidate Schedule's rules for the window and
        subtract the live claims read from the database (`ignore_claims`: what the rules
        offer whoever holds it; the claims guard then decides)."""
        schedules = await self.schedules(c, only)
        if not schedules:
            return []
        allowed_locations = await self._location_filter(c)
        established = await self._established(c.patient)
        window = Interval(max(c.start, now), c.end)
        if window.end <= window.start:
            return []
        roles = await self._roles_of(schedules)
        loc_ids = {i for s in schedules for i in schedule_locations(s)}
        locations = await self.repo.locations_with_ancestors(loc_ids)
        slots = await self.repo.explicit_slots(
            [s["id"] for s in schedules], window.start, window.end
        )
        out: list[Proposal] = []
        for schedule in schedules:
            actors = claimed_actors(schedule, roles)
            busy = [] if ignore_claims else await self.busy(list(actors), window)
            candidates = bookable_slots(
                schedule,
                window=window,
                now=now,
                locations=locations,
                explicit_slots=slots.get(schedule["id"], []),
                busy=busy,
                visit_types=c.visit_types or None,
            )
            mine = bool(established & set(actors)) or bool(established & set(_refs(schedule)))
            for cand in candidates:
                if allowed_locations is not None and not _location_ok(
                    cand, schedule, allowed_locations
                ):
                    continue
                out.append(Proposal(cand, schedule, actors, mine))
        out.sort(key=lambda p: (not p.established, p.candidate.start, p.candidate.schedule_id))
        return out[:limit]

    async def claimed(self, schedule_id: str, window: Interval) -> bool:
        """True when a live claim holds part of `window` on the Schedule's actors: a cheap
        refusal of time someone has just booked (never a booking decision: the claims
        guard inside the transaction makes those)."""
        schedule = (await self.repo.by_ids("Schedule", {schedule_id})).get(schedule_id)
        if schedule is None:
            return False
        actors = claimed_actors(schedule, await self._roles_of([schedule]))
        return bool(actors) and bool(await self.busy(list(actors), window))

    async def _roles_of(self, schedules: list[Json]) -> dict[str, Json]:
        """The PractitionerRoles the schedules name, by id (they claim their practitioner)."""
        role_ids = {
            r.split("/")[1]
            for s in schedules
            for r in _refs(s)
            if r.startswith("PractitionerRole/")
        }
        return await self.repo.by_ids("PractitionerRole", role_ids)

    async def _established(self, patient_id: str | None) -> set[str]:
        if not patient_id:
            return set()
        patient = await self.repo.read("Patient", patient_id)
        if patient is None:
            return set()
        return {str(gp.get("reference", "")) for gp in patient.get("generalPractitioner", [])}


def claimed_actors(schedule: Json, roles: dict[str, Json]) -> tuple[str, ...]:
    """References a booking on this Schedule claims (a PractitionerRole claims its
    practitioner), in a stable order."""
    out: list[str] = []
    for ref in _refs(schedule):
        rtype, _, rid = ref.partition("/")
        if rtype == "PractitionerRole":
            role = roles.get(rid)
            if role and role.get("practitioner", {}).get("reference"):
                out.append(str(role["practitioner"]["reference"]))
        elif rtype in ("Practitioner", "Location", "Device"):
            out.append(ref)
    return tuple(dict.fromkeys(out))


def _role_ok(role: Json, c: FindCriteria, established: set[str]) -> bool:
    """A role passes accepting-new-patients (the patient's own practitioner always does)
    and coverage (it must list one of the plans)."""
    own = str(role["practitioner"]["reference"]).split("/")[-1] in established
    if c.accepting_new_patients and not own and not accepts_new_patients(role):
        return False
    return not c.coverage or takes_any(role, c.coverage)


def _location_ok(cand: Candidate, schedule: Json, allowed: set[str]) -> bool:
    if cand.location_id is not None:
        return cand.location_id in allowed
    return any(r.split("/")[1] in allowed for r in _refs(schedule) if r.startswith("Location/"))


def proposed_appointment(p: Proposal, patient_id: str | None, reasons: Sequence[str]) -> Json:
    """The proposed Appointment for one proposal (times in the location's local offset)."""
    cand = p.candidate
    participants: list[Json] = [
        {"actor": {"reference": ref}, "required": "required", "status": "needs-action"}
        for ref in p.actors
    ]
    if patient_id:
        participants.append(
            {
                "actor": {"reference": f"Patient/{patient_id}"},
                "required": "required",
                "status": "needs-action",
            }
        )
    appt: Json = {
        "resourceType": "Appointment",
        "id": cand.slot_id,
        "status": "proposed",
        "serviceType": [{"coding": [{"system": VISIT_TYPE_SYSTEM, "code": cand.visit_type}]}],
        "start": render_local(cand.start, cand.tz),
        "end": render_local(cand.end, cand.tz),
        "minutesDuration": int((cand.end - cand.start).total_seconds() // 60),
        "slot": [{"reference": f"Slot/{cand.slot_id}"}],
        "participant": participants,
    }
    if p.schedule.get("specialty"):
        appt["specialty"] = p.schedule["specialty"]
    if reasons:
        appt["reasonCode"] = [{"text": r} for r in reasons]
    return appt
