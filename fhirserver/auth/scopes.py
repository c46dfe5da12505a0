"""SMART scopes, v1 and v2, parsed into a structure that can be compared.

A resource scope is `context/type.permissions[?constraints]`:

- context: `patient`, `user` or `system`;
- type: a FHIR resource type or `*`;
- permissions: v2 letters `c r u d s` (in that order), or v1 `read` (= `rs`),
  `write` (= `cud`) and `*` (= `cruds`);
- constraints (v2 only): `?param=value&...`, e.g. `patient/Observation.rs?category=laboratory`.

Every other scope (`openid`, `fhirUser`, `launch`, `launch/patient`, `offline_access`, ...)
is compared as a plain string. Only the names in `OTHER_SCOPES` are accepted.

`Scopes.covers` is the subset check used when a user narrows scopes on the consent page,
when a refresh asks for fewer scopes (never more) and when a backend client asks for
scopes within its pre-authorized ones. It works per permission, so `patient/X.rs` plus
`patient/X.cud` together cover `patient/X.cruds`, and v1 `.read` is the same grant as
v2 `.rs`. A constrained grant covers only requests carrying at least its constraints.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import parse_qsl, urlencode

CONTEXTS = ("patient", "user", "system")
PERMISSIONS = "cruds"
V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}

# Scopes that are not about resources. fhirserver:* are this server's own.
ADMIN_SCOPE = "fhirserver:admin"
LAUNCH_API_SCOPE = "fhirserver:launch"
OTHER_SCOPES = frozenset(
    {
        "openid",
        "fhirUser",
        "profile",
        "launch",
        "launch/patient",
        "launch/encounter",
        "offline_access",
        "online_access",
        ADMIN_SCOPE,
        LAUNCH_API_SCOPE,
    }
)

_RESOURCE = re.compile(
    r"^(?P<context>patient|user|system)/(?P<type>\*|[A-Z][A-Za-z]{0,63})"
    r"\.(?P<perms>[a-z*]+)(?:\?(?P<query>.*))?$"
)
_V2_PERMS = re.compile(r"^c?r?u?d?s?$")


class ScopeError(ValueError):
    """A scope string that is not a valid SMART scope."""


@dataclass(frozen=True)
class ResourceScope:
    """One resource scope, normalised: v1 and v2 spellings of the same grant compare equal."""

    context: str
    resource_type: str
    permissions: frozenset[str]
    constraints: tuple[tuple[str, str], ...] = ()
    v1: bool = field(default=False, compare=False)

    @classmethod
    def parse(cls, text: str) -> ResourceScope:
        """Parse `patient/Appointment.rs`, `user/*.read`, `system/Slot.s?status=free`..."""
        m = _RESOURCE.match(text)
        if m is None:
            raise ScopeError(f"not a SMART resource scope: {text}")
        perms, query = m["perms"], m["query"]
        if perms in V1_PERMISSIONS:
            if query is not None:
                raise ScopeError(f"v1 scopes take no query constraints: {text}")
            letters, v1 = V1_PERMISSIONS[perms], True
        elif perms and _V2_PERMS.match(perms):
            letters, v1 = perms, False
        else:
            raise ScopeError(f"permissions must be c, r, u, d, s in that order: {text}")
        constraints: tuple[tuple[str, str], ...] = ()
        if query is not None:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=False)
            if not pairs or any(not k or not v for k, v in pairs):
                raise ScopeError(f"malformed query constraint: {text}")
            constraints = tuple(sorted(set(pairs)))
        return cls(m["context"], m["type"], frozenset(letters), constraints, v1)

    def text(self) -> str:
        """The canonical v2 spelling."""
        letters = "".join(p for p in PERMISSIONS if p in self.permissions)
        query = f"?{urlencode(self.constraints)}" if self.constraints else ""
        return f"{self.context}/{self.resource_type}.{letters}{query}"

    def _grants(self, other: ResourceScope, permission: str) -> bool:
        """True when this scope grants `permission` everywhere `other` asks for it."""
        return (
            self.context == other.context
            and self.resource_type in ("*", other.resource_type)
            and permission in self.permissions
            and set(self.constraints) <= set(other.constraints)
        )

    def intersect(self, allowed: ResourceScope) -> ResourceScope | None:
        """The part of this (requested) scope that `allowed` grants, or None."""
        if self.context != allowed.context:
            return None
        if self.resource_type == "*":
            rtype = allowed.resource_type
        elif allowed.resource_type in ("*", self.resource_type):
            rtype = self.resource_type
        else:
            return None
        perms = self.permissions & allowed.permissions
        if not perms:
            return None
        constraints = tuple(sorted(set(self.constraints) | set(allowed.constraints)))
        return ResourceScope(self.context, rtype, perms, constraints)


@dataclass(frozen=True)
class Scopes:
    """A parsed scope string: resource scopes, other scopes, and the tokens in order."""

    resources: tuple[ResourceScope, ...] = ()
    others: frozenset[str] = frozenset()
    tokens: tuple[str, ...] = ()

    @classmethod
    def parse(cls, scope: str | Iterable[str] | None) -> Scopes:
        """Parse a space-separated scope string (or tokens); ScopeError on any bad token."""
        if scope is None:
            return cls()
        if isinstance(scope, str):
            # Every request parses its token's scope string (or the trusted one), and a
            # deployment has few distinct strings: parse each once (Scopes is immutable).
            return _parse_text(scope)
        return cls._from_tokens([s for s in scope if s])

    @classmethod
    def _from_tokens(cls, raw: list[str]) -> Scopes:
        tokens = tuple(dict.fromkeys(raw))  # dedupe, keep order
        resources: list[ResourceScope] = []
        others: set[str] = set()
        for token in tokens:
            if token in OTHER_SCOPES:
                others.add(token)
            else:
                resources.append(ResourceScope.parse(token))
        return cls(tuple(resources), frozenset(others), tokens)

    def __str__(self) -> str:
        return " ".join(self.tokens)

    def __bool__(self) -> bool:
        return bool(self.tokens)

    def __contains__(self, item: str) -> bool:
        return item in self.others

    def covers_resource(self, requested: ResourceScope) -> bool:
        """True when every permission `requested` asks for is granted by some scope here."""
        return all(
            any(g._grants(requested, p) for g in self.resources) for p in requested.permissions
        )

    def covers(self, requested: Scopes) -> bool:
        """True when `requested` asks for nothing beyond these scopes (the subset check)."""
        return requested.others <= self.others and all(
            self.covers_resource(r) for r in requested.resources
        )

    def allows(
        self,
        context: str,
        resource_type: str,
        permission: str,
        params: Iterable[tuple[str, str]] = (),
    ) -> bool:
        """True when one scope grants `permission` on `resource_type` in `context`.

        `params` are the request's search parameters, checked against query constraints.
        """
        want = ResourceScope(context, resource_type, frozenset(permission), tuple(params))
        return any(g._grants(want, permission) for g in self.resources)

    def narrowed_to(self, allowed: Scopes) -> Scopes:
        """What remains of these (requested) scopes within `allowed`.

        A requested scope that `allowed` covers is kept as spelled; one it covers only in
        part becomes the v2 scopes of the overlap (`patient/*.read` within
        `patient/Appointment.rs` gives `patient/Appointment.rs`); the rest is dropped.
        """
        out: list[str] = []
        by_token = dict(zip(self._resource_tokens(), self.resources, strict=True))
        for token in self.tokens:
            if token in OTHER_SCOPES:
                if token in allowed.others:
                    out.append(token)
                continue
            requested = by_token[token]
            if allowed.covers_resource(requested):
                out.append(token)
                continue
            for grant in allowed.resources:
                part = requested.intersect(grant)
                if part is not None:
                    out.append(part.text())
        return Scopes.parse(out)

    def _resource_tokens(self) -> list[str]:
        return [t for t in self.tokens if t not in OTHER_SCOPES]

    def without(self, *names: str) -> Scopes:
        """These scopes minus some tokens."""
        return Scopes.parse([t for t in self.tokens if t not in names])

    @property
    def contexts(self) -> set[str]:
        """The contexts (patient, user, system) the resource scopes use."""
        return {r.context for r in self.resources}

    def is_superuser(self) -> bool:
        """`system/*.*` (or `system/*.cruds`) without constraints: full system access."""
        return any(
            r.context == "system"
            and r.resource_type == "*"
            and r.permissions == frozenset(PERMISSIONS)
            and not r.constraints
            for r in self.resources
        )


def parse_scope(scope: str | None) -> Scopes:
    """Parse, or ScopeError."""
    return Scopes.parse(scope)


#: Types the consent page offers one by one in place of a `*` scope.
NARROWABLE_TYPES = ("Patient", "Appointment", "Slot", "Schedule", "Practitioner",
                    "PractitionerRole", "Location", "HealthcareService")
#: v2 query constraints the consent page offers on a type's read and search.
OFFERED_CONSTRAINTS = {"Appointment": (("status", "booked"),)}


def narrower_options(requested: Scopes) -> list[str]:
    """Scopes a user may grant instead of the requested ones, on the consent page: one type
    in place of `*`, and query-constrained v2 read/search (`patient/Appointment.rs?status=
    booked`). Each is covered by a requested scope; none is requested as spelled."""
    out: dict[str, None] = {}
    for scope in requested.resources:
        types = NARROWABLE_TYPES if scope.resource_type == "*" else (scope.resource_type,)
        for rtype in types:
            if rtype != scope.resource_type:
                out[ResourceScope(scope.context, rtype, scope.permissions).text()] = None
            reads = scope.permissions & frozenset("rs")
            for constraint in OFFERED_CONSTRAINTS.get(rtype, ()):
                if reads and not scope.constraints:
                    out[ResourceScope(scope.context, rtype, reads, (constraint,)).text()] = None
    return [t for t in out if t not in requested.tokens]


@lru_cache(maxsize=1024)
def _parse_text(scope: str) -> Scopes:
    return Scopes._from_tokens(scope.split())
