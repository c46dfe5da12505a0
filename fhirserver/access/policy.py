"""The one access policy: what a Principal may read, search, create, update and delete.

Two questions, both asked of every request (docs/access.md has the whole table):

1. Does a scope grant the permission on the type? SMART contexts: `system/` scopes count
   for backend services only, `user/` scopes for users by their role, `patient/` scopes
   within the patient in context. No granting scope: 403.
2. Which resources of that type? A Visibility per context (the patient's compartment, the
   practitioner's own schedule and patients, the staff member's organization), AND the
   query constraint of a v2 scope (`patient/Appointment.rs?status=booked`). The union over
   the granting contexts is the set the request may touch; a resource outside it is 404,
   never a hint that it exists. A practitioner's or staff member's `patient/` scopes reach
   the patient in context only when that patient is one of theirs (SMART: the user's own
   permissions bound every scope).

Directory types (practitioners, roles, locations, services, organizations, devices,
schedules and slots) hold no PHI: any granting scope reads all of them. `patient/Slot.rs`
therefore grants every Slot: Slot is in no patient compartment, and bookable time is public
(it is published by $bulk-publish without a token).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fhirserver.access.visibility import Doc, Visibility, and_filters
from fhirserver.auth.principal import Principal
from fhirserver.auth.scopes import ResourceScope
from fhirserver.fhir.errors import Forbidden, NotFound
from fhirserver.fhir.search import parse_search
from fhirserver.phi.blind import BlindIndex
from fhirserver.storage.resources import ResourceStore

DIRECTORY_TYPES = frozenset({
    "Practitioner", "PractitionerRole", "Location", "HealthcareService", "Organization",
    "Device", "Schedule", "Slot",
})
AUDIT_TYPE = "AuditEvent"
_ALL: Visibility | None = None  # a visibility of None: every resource of the type

#: The SMART permission letter each FHIR interaction needs.
PERMISSION = {
    "read": "r", "vread": "r", "history-instance": "r",
    "search-type": "s", "history-type": "s", "history-system": "s",
    "create": "c", "update": "u", "patch": "u", "delete": "d",
}
_VERBS = {"r": "read", "s": "search", "c": "create", "u": "update", "d": "delete"}
_LIMIT = 100_000  # ids gathered for one visibility rule (a practitioner's patients, ...)

Indexer = Any  # fhir.indexing.full_indexer: resource -> (idx, srt)


@dataclass(frozen=True)
class ContextGrant:
    """What one SMART context grants: a visibility (None = all) and a query constraint."""

    visibility: Visibility | None
    constraint: Doc | None

    @property
    def unrestricted(self) -> bool:
        """True when this context grants every resource of the type."""
        return self.visibility is None and self.constraint is None

    def mongo_filter(self) -> Doc:
        """The filter selecting what this context grants."""
        vis = None if self.visibility is None else self.visibility.mongo_filter()
        return and_filters(vis, self.constraint)


@dataclass(frozen=True)
class Grant:
    """What a request may touch of one type: the union of its contexts' grants."""

    resource_type: str
    permission: str
    contexts: tuple[ContextGrant, ...]

    @property
    def unrestricted(self) -> bool:
        """True when every resource of the type is granted."""
        return any(c.unrestricted for c in self.contexts)

    def mongo_filter(self) -> Doc | None:
        """The filter selecting the granted resources, or None for all of them."""
        if self.unrestricted:
            return None
        parts = [c.mongo_filter() for c in self.contexts]
        return parts[0] if len(parts) == 1 else {"$or": parts}


@dataclass
class AccessPolicy:
    """The policy for one request's principal (caches what it looks up)."""

    principal: Principal
    store: ResourceStore
    indexer: Indexer
    _actors: frozenset[str] | None = field(default=None, init=False)
    _patients: frozenset[str] | None = field(default=None, init=False)
    _schedules: frozenset[str] | None = field(default=None, init=False)
    _context_patient_ok: bool | None = field(default=None, init=False)

    # ---- scopes -------------------------------------------------------------------------

    async def grant(
        self, rtype: str, permission: str, *, required: bool = True
    ) -> Grant | None:
        """The grant for `permission` ("r", "s", "c", "u", "d") on `rtype`.

        No granting scope: Forbidden (403), or None with `required=False`.
        """
        contexts: list[ContextGrant] = []
        for context in self._contexts():
            scopes = self._granting(context, rtype, permission)
            if not scopes:
                continue
            visibility = await self._visibility(context, rtype, permission)
            if visibility is not None and visibility.nothing:
                continue
            for constraint in _constraints(rtype, scopes, permission, self.store.blind):
                contexts.append(ContextGrant(visibility, constraint))
        if not contexts:
            if required:
                raise Forbidden(
                    f"the access token grants no {_VERBS[permission]} access to {rtype}",
                    code="forbidden",
                )
            return None
        return Grant(rtype, permission, tuple(contexts))

    def _contexts(self) -> list[str]:
        p = self.principal
        if p.is_trusted or p.role == "system":
            return ["system"]
        return ["user", "patient"]

    def _granting(self, context: str, rtype: str, permission: str) -> list[ResourceScope]:
        return [
            s for s in self.principal.scopes.resources
            if s.context == context and s.resource_type in ("*", rtype)
            and permission in s.permissions
        ]

    # ---- visibility ---------------------------------------------------------------------

    async def _visibility(self, context: str, rtype: str, permission: str) -> Visibility | None:
        """What `context` lets the principal touch of `rtype` (None = all, empty = none)."""
        p = self.principal
        if context == "system":
            return None
        if context == "patient" or p.role == "patient":
            if (p.role != "patient" and rtype not in DIRECTORY_TYPES
                    and not await self.may_see_context_patient()):
                return Visibility()
            return self._patient_compartment(rtype, permission)
        if rtype == AUDIT_TYPE:
            return None if p.role == "auditor" and permission in "rs" else Visibility()
        if p.role == "auditor":
            return Visibility()
        if p.role in ("practitioner", "staff"):
            return await self._care_team(rtype, permission)
        return Visibility()

    def _patient_compartment(self, rtype: str, permission: str) -> Visibility | None:
        pid = self.principal.patient_id
        if pid is None:
            return Visibility()
        ref = f"Patient/{pid}"
        if rtype in DIRECTORY_TYPES:
            return _ALL if permission in "rs" else Visibility()
        if rtype == "Patient":
            return Visibility.where(("_id", [pid]))
        if rtype in ("Appointment", "AppointmentResponse"):
            return Visibility.where(("idx.patient", [ref]))
        return Visibility()

    async def _care_team(self, rtype: str, permission: str) -> Visibility | None:
        """A practitioner's own schedule and patients; a staff member's organization's."""
        if rtype in DIRECTORY_TYPES and permission in "rs":
            return _ALL  # before looking up actors: directory reads are the common case
        actors = await self.actors()
        orgs = self.principal.organizations
        if rtype in ("Appointment", "AppointmentResponse"):
            return Visibility.where(("idx.actor", actors))
        if rtype == "Patient":
            return Visibility.where(
                ("_id", await self.patients()),
                ("idx.general-practitioner", actors),
                ("idx.organization", orgs),
            )
        if rtype not in DIRECTORY_TYPES:
            return Visibility()
        # Writes to the directory: only what belongs to one's own practice or organization.
        if rtype == "Schedule":
            return Visibility.where(("idx.actor", actors))
        if rtype == "Slot":
            return Visibility.where(("idx.schedule", await self.schedules()))
        if self.principal.role == "staff":
            if rtype == "Organization":
                return Visibility.where(("_id", [o.split("/", 1)[1] for o in orgs]))
            if rtype in ("Location", "HealthcareService", "Device", "PractitionerRole"):
                return Visibility.where(("idx.organization", orgs))
        return Visibility()

    async def may_see_context_patient(self) -> bool:
        """True when a user who is not the patient may act in the patient's context: a
        practitioner or staff member whose care team or organization the patient is in.
        `patient/` scopes never reach past what the user could see with `user/` scopes."""
        if self._context_patient_ok is None:
            pid, ok = self.principal.patient_id, False
            if pid and self.principal.role in ("practitioner", "staff"):
                care = await self._care_team("Patient", "r")
                docs = await self.store.find("Patient", {"_id": pid}, projection={"idx": 1})
                ok = bool(docs) and (care is None or care.matches(docs[0]))
            self._context_patient_ok = ok
        return self._context_patient_ok

    async def actors(self) -> frozenset[str]:
        """References that stand for the principal in participants and Schedule actors."""
        if self._actors is not None:
            return self._actors
        p, found = self.principal, set[str]()
        if p.role == "practitioner" and p.fhir_user:
            found.add(p.fhir_user)
            if p.fhir_user.startswith("Practitioner/"):
                roles = await self.store.ids(
                    "PractitionerRole", {"idx.practitioner": p.fhir_user}, _LIMIT
                )
                found.update(f"PractitionerRole/{r}" for r in roles)
        if p.role == "staff" and p.organizations:
            orgs = sorted(p.organizations)
            for rtype in ("Location", "HealthcareService", "Device"):
                ids = await self.store.ids(rtype, {"idx.organization": {"$in": orgs}}, _LIMIT)
                found.update(f"{rtype}/{i}" for i in ids)
            for doc in await self.store.find(
                "PractitionerRole", {"idx.organization": {"$in": orgs}},
                projection={"idx.practitioner": 1},
            ):
                found.add(f"PractitionerRole/{doc['_id']}")
                found.update((doc.get("idx") or {}).get("practitioner", []))
        self._actors = frozenset(found)
        return self._actors

    async def patients(self) -> frozenset[str]:
        """Ids of the Patients in appointments with the principal's actors."""
        if self._patients is None:
            actors = sorted(await self.actors())
            found: set[str] = set()
            if actors:
                for doc in await self.store.find(
                    "Appointment", {"idx.actor": {"$in": actors}}, projection={"idx.patient": 1}
                ):
                    refs = (doc.get("idx") or {}).get("patient", [])
                    found.update(r.split("/", 1)[1] for r in refs if r.startswith("Patient/"))
            self._patients = frozenset(found)
        return self._patients

    async def schedules(self) -> frozenset[str]:
        """References of the Schedules whose actors include the principal's actors."""
        if self._schedules is None:
            actors = sorted(await self.actors())
            ids = (
                await self.store.ids("Schedule", {"idx.actor": {"$in": actors}}, _LIMIT)
                if actors else []
            )
            self._schedules = frozenset(f"Schedule/{i}" for i in ids)
        return self._schedules

    # ---- checks -------------------------------------------------------------------------

    async def search_filter(self, rtype: str, *, required: bool = True) -> Doc | None:
        """The filter a search of `rtype` must add (None: none needed).

        Not granted: Forbidden, or with `required=False` a filter that matches nothing.
        """
        grant = await self.grant(rtype, "s", required=required)
        if grant is None:
            return {"_id": {"$in": []}}
        return grant.mongo_filter()

    async def include_filter(self, rtype: str) -> Doc | None:
        """The filter for resources pulled in by _include/_revinclude: read permission."""
        grant = await self.grant(rtype, "r", required=False)
        if grant is None:
            return {"_id": {"$in": []}}
        return grant.mongo_filter()

    async def check_read(self, rtype: str, rid: str) -> None:
        """Forbidden without a read scope; NotFound when the resource is not the caller's."""
        grant = await self.grant(rtype, "r")
        assert grant is not None
        if grant.unrestricted:
            return
        docs = await self.store.find(rtype, {"_id": rid}, projection={"idx": 1})
        # A deleted resource has no current content to decide on: whose it was stays
        # undisclosed (404, where a backend service gets 410 and its history).
        if not docs or not await self._granted(grant, docs[0]):
            raise NotFound(f"{rtype}/{rid} is not known")

    async def check_write(
        self, rtype: str, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None
    ) -> None:
        """A create, update or delete: the old and the new content must both be the caller's.

        What the caller cannot even read is 404; what they read but may not change, 403.
        """
        permission = "c" if old is None else ("d" if new is None else "u")
        grant = await self.grant(rtype, permission)
        assert grant is not None
        if grant.unrestricted:
            return
        if old is not None and not await self._granted(grant, self._as_doc(old)):
            readable = await self.grant(rtype, "r", required=False)
            if readable is None or not await self._granted(readable, self._as_doc(old)):
                raise NotFound(f"{rtype}/{old.get('id')} is not known")
            raise Forbidden(
                f"the access token does not let you {_VERBS[permission]} {rtype}/{old.get('id')}",
                code="forbidden",
            )
        if new is not None and not await self._granted(grant, self._as_doc(new)):
            raise Forbidden(
                f"the access token does not let you write this {rtype}: it would not be yours",
                code="forbidden",
            )

    def _as_doc(self, resource: Mapping[str, Any]) -> Doc:
        idx, _ = self.indexer(resource)
        return {"_id": resource.get("id"), "idx": idx}

    async def _granted(self, grant: Grant, doc: Mapping[str, Any]) -> bool:
        for ctx in grant.contexts:
            if ctx.visibility is not None and not ctx.visibility.matches(doc):
                continue
            if ctx.constraint is None:
                return True
            query = and_filters({"_id": doc.get("_id")}, ctx.constraint)
            if doc.get("_id") is not None and await self.store.count(grant.resource_type, query):
                return True
        return False

    def require_unrestricted(self, rtype: str | None, what: str) -> None:
        """Forbidden unless the caller is a backend service (or authorization is off): for
        what cannot be narrowed to the caller's resources (type and system history,
        conditional criteria)."""
        if self.principal.is_trusted or self.principal.role == "system":
            return
        raise Forbidden(
            f"{what} on {rtype or 'the whole server'} needs a backend-service (system/) token",
            code="forbidden",
        )



def _constraints(
    rtype: str, scopes: Iterable[ResourceScope], permission: str, blind: BlindIndex | None
) -> list[Doc | None]:
    """The query constraints of the granting scopes as filters (None = unconstrained).

    Constraints narrow reads and searches; a constrained scope grants no writes.
    """
    out: list[Doc | None] = []
    for scope in scopes:
        if not scope.constraints:
            return [None]
        if permission in "rs":
            spec = parse_search(rtype, list(scope.constraints), strict=True, blind=blind)
            out.append(spec.filter)
    return out
