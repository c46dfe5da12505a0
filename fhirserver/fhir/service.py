"""FHIR interactions: create, read, vread, update, patch, delete and their conditional forms.

Each function validates, then writes through the ResourceStore inside one transaction.
Handlers in api/ call exactly one of these and render the result.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jsonpatch
import orjson
from pymongo.asynchronous.client_session import AsyncClientSession

from fhirserver.access.current import current_policy
from fhirserver.fhir.combiner import CreateCombiner
from fhirserver.fhir.errors import (
    BadRequest,
    Conflict,
    MethodNotAllowed,
    NotFound,
    PreconditionFailed,
    Unprocessable,
)
from fhirserver.fhir.search import parse_search
from fhirserver.fhir.types import is_read_only, is_supported
from fhirserver.fhir.validation import validate_resource
from fhirserver.phi.blind import BlindIndex
from fhirserver.phi.cipher import PHI_TYPES
from fhirserver.storage.mongo import Mongo
from fhirserver.storage.resources import ConditionalKeyTaken, ResourceStore, Stored

Params = list[tuple[str, str]]
WriteHook = Callable[
    [str, Mapping[str, Any] | None, Mapping[str, Any] | None, AsyncClientSession], Awaitable[None]
]

# A conditional create that lost a race retries this often before giving up with 409.
_CONDITIONAL_RETRIES = 20


@dataclass(frozen=True)
class WriteResult:
    """The outcome of a write: the stored version and the HTTP status it warrants."""

    stored: Stored | None
    status: int


def require_type(resource_type: str) -> None:
    """NotFound for a resource type this server does not serve."""
    if not is_supported(resource_type):
        raise NotFound(f"resource type {resource_type!r} is not supported by this server")


def require_writable(resource_type: str) -> None:
    """NotFound for an unknown type; 405 for a type the API may only read (AuditEvent)."""
    require_type(resource_type)
    if is_read_only(resource_type):
        raise MethodNotAllowed(
            f"{resource_type} is written by the server only: it cannot be created, updated, "
            "patched or deleted through the API"
        )


def parse_if_match(value: object) -> int | None:
    """`W/"3"` (or `"3"`, `3`) -> 3; None when absent; 400 when malformed (or not a string:
    a transaction entry's `request.ifMatch` is whatever JSON the client sent)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f'If-Match {value!r} is not a version ETag like W/"1"')
    v = value.strip()
    if v.startswith("W/"):
        v = v[2:]
    v = v.strip('"')
    if not (v.isascii() and v.isdigit()):  # int() also takes '²' and '٣': not versions
        raise BadRequest(f'If-Match {value!r} is not a version ETag like W/"1"')
    return int(v)


def conditional_key(resource_type: str, params: Params, blind: BlindIndex | None = None) -> str:
    """A canonical form of conditional criteria, to serialize racing conditional creates.

    With a blind index, the criteria of types that hold PHI are stored as a keyed digest
    (`If-None-Exist: identifier=...` would otherwise put an MRN in conditional_keys).
    """
    spec = parse_search(resource_type, params, strict=True, blind=blind)
    key = "&".join(f"{k}={v}" for k, v in sorted(spec.passthrough))
    if blind is not None and resource_type in PHI_TYPES:
        return "h:" + blind.digest(f"{resource_type}?{key}")
    return key


class FhirService:
    """The FHIR REST interactions over one store."""

    def __init__(self, mongo: Mongo, store: ResourceStore, *, max_conditional: int = 2) -> None:
        self.mongo = mongo
        self.store = store
        self.max_conditional = max_conditional
        self.hooks: list[WriteHook] = []
        # Group commit of plain creates (fhir/combiner.py); None: each in its own transaction.
        self.combiner: CreateCombiner | None = None

    def add_write_hook(self, hook: WriteHook) -> None:
        """Call `hook(type, old, new, session)` inside every write's transaction."""
        self.hooks.append(hook)

    async def _run_hooks(
        self,
        resource_type: str,
        old: Mapping[str, Any] | None,
        new: Mapping[str, Any] | None,
        session: AsyncClientSession,
    ) -> None:
        for hook in self.hooks:
            await hook(resource_type, old, new, session)

    # ---- reads -------------------------------------------------------------

    async def read(self, resource_type: str, rid: str) -> Stored:
        """The current version of a resource."""
        require_type(resource_type)
        return await self.store.read(resource_type, rid)

    async def vread(self, resource_type: str, rid: str, version: str) -> Stored:
        """A specific version of a resource."""
        require_type(resource_type)
        if not (version.isascii() and version.isdigit()):
            raise NotFound(f"{resource_type}/{rid} has no version {version!r}")
        return await self.store.vread(resource_type, rid, int(version))

    async def match(
        self, resource_type: str, params: Params, session: AsyncClientSession | None = None
    ) -> list[str]:
        """Ids matching conditional criteria (at most max_conditional+1 looked up).

        Only callers who may see every resource of the type use conditional criteria: a
        match outside the caller's resources would disclose that it exists.
        """
        policy = current_policy()
        if policy is not None:
            policy.require_unrestricted(resource_type, "conditional create, update and delete")
        spec = parse_search(resource_type, params, strict=True, blind=self.store.blind)
        if spec.chains or spec.near:
            raise BadRequest("conditional criteria may not use chained or near parameters")
        if not spec.filter:
            raise PreconditionFailed("conditional criteria must contain at least one filter")
        docs = await self.store.find(
            resource_type,
            spec.filter,
            projection={"_id": 1},
            limit=self.max_conditional + 1,
            session=session,
            fresh=True,  # a racer's committed create must be found before it is answered
        )
        return [d["_id"] for d in docs]

    # ---- writes ------------------------------------------------------------

    async def create(
        self,
        resource_type: str,
        body: object,
        *,
        if_none_exist: Params | None = None,
    ) -> WriteResult:
        """POST /Type (optionally conditional via If-None-Exist)."""
        require_writable(resource_type)
        resource = validate_resource(body, resource_type)
        if if_none_exist is None:
            if self.combiner is not None:
                result: WriteResult = await self.combiner.create(resource)
                return result
            return await self.mongo.transaction(lambda s: self.create_in(resource, s))
        key = conditional_key(resource_type, if_none_exist, self.store.blind)
        for _ in range(_CONDITIONAL_RETRIES):
            ids = await self.match(resource_type, if_none_exist)
            if len(ids) > 1:
                raise PreconditionFailed(
                    f"If-None-Exist matched {len(ids)} {resource_type} resources"
                )
            if len(ids) == 1:
                return WriteResult(
                    await self.store.read(resource_type, ids[0], fresh=True), 200
                )
            try:
                return await self.mongo.transaction(
                    lambda s: self.create_in(resource, s, conditional_key=key)
                )
            except ConditionalKeyTaken:
                # Either a racer committed (the next match finds it) or the key is stale
                # (its resource stopped matching); drop a stale key only when nothing matches.
                if not await self.match(resource_type, if_none_exist):
                    await self.store.release_conditional_key(resource_type, key)
        raise Conflict(f"conditional create on {resource_type} kept colliding; retry")

    async def create_in(
        self,
        resource: Mapping[str, Any],
        session: AsyncClientSession,
        *,
        rid: str | None = None,
        conditional_key: str | None = None,
    ) -> WriteResult:
        """Create inside an open transaction (used by create and transaction Bundles)."""
        require_writable(resource["resourceType"])
        stored = await self.store.create(
            resource, session, rid=rid, conditional_key=conditional_key
        )
        await self._run_hooks(resource["resourceType"], None, _body(stored), session)
        return WriteResult(stored, 201)

    async def update(
        self, resource_type: str, rid: str, body: object, *, if_match: str | None = None
    ) -> WriteResult:
        """PUT /Type/id: new version, or create with a client-chosen id."""
        require_writable(resource_type)
        resource = validate_resource(body, resource_type)
        if resource.get("id") != rid:
            raise BadRequest(
                f"resource id {resource.get('id')!r} does not match the URL id {rid!r}",
                expression=[f"{resource_type}.id"],
            )
        expected = parse_if_match(if_match)
        return await self.mongo.transaction(
            lambda s: self.update_in(resource, rid, s, if_match=expected)
        )

    async def update_in(
        self,
        resource: Mapping[str, Any],
        rid: str,
        session: AsyncClientSession,
        *,
        if_match: int | None = None,
    ) -> WriteResult:
        """Update inside an open transaction."""
        resource_type = resource["resourceType"]
        require_writable(resource_type)
        old_doc = await self.store.read_doc(resource_type, rid, session) if self.hooks else None
        stored, created = await self.store.update(resource, rid, session, if_match=if_match)
        old = orjson.loads(old_doc["raw"]) if old_doc else None
        await self._run_hooks(resource_type, old, _body(stored), session)
        return WriteResult(stored, 201 if created else 200)

    async def conditional_update(
        self, resource_type: str, params: Params, body: object, *, if_match: str | None = None
    ) -> WriteResult:
        """PUT /Type?criteria: none -> create, one -> update it, many -> 412."""
        require_writable(resource_type)
        resource = validate_resource(body, resource_type)
        expected = parse_if_match(if_match)

        async def run(session: AsyncClientSession) -> WriteResult:
            ids = await self.match(resource_type, params, session)
            if len(ids) > 1:
                raise PreconditionFailed(f"criteria matched {len(ids)} {resource_type} resources")
            if not ids:
                return await self.create_in(resource, session, rid=resource.get("id"))
            if resource.get("id") not in (None, ids[0]):
                raise BadRequest(
                    f"resource id {resource['id']!r} differs from the matched {ids[0]!r}"
                )
            return await self.update_in(resource, ids[0], session, if_match=expected)

        return await self.mongo.transaction(run)

    async def patch(
        self, resource_type: str, rid: str, body: object, *, if_match: str | None = None
    ) -> WriteResult:
        """PATCH /Type/id with a JSON Patch document."""
        require_writable(resource_type)
        expected = parse_if_match(if_match)

        async def run(session: AsyncClientSession) -> WriteResult:
            return await self.patch_in(resource_type, rid, body, session, if_match=expected)

        return await self.mongo.transaction(run)

    async def patch_in(
        self,
        resource_type: str,
        rid: str,
        body: object,
        session: AsyncClientSession,
        *,
        if_match: int | None = None,
    ) -> WriteResult:
        """Apply a JSON Patch inside an open transaction; the result is validated like a PUT."""
        require_writable(resource_type)
        current = await self.store.read(resource_type, rid, session)
        if if_match is not None and if_match != current.version:
            raise PreconditionFailed(
                f"{resource_type}/{rid} is at version {current.version}, not {if_match} (If-Match)"
            )
        patched = apply_json_patch(orjson.loads(current.raw or b"{}"), body)
        if patched.get("resourceType") != resource_type or patched.get("id") != rid:
            raise Unprocessable("a patch may not change resourceType or id")
        resource = validate_resource(patched, resource_type)
        return await self.update_in(resource, rid, session, if_match=current.version)

    async def delete(
        self, resource_type: str, rid: str, *, if_match: str | None = None
    ) -> WriteResult:
        """DELETE /Type/id (idempotent: deleting a missing resource is fine)."""
        require_writable(resource_type)
        expected = parse_if_match(if_match)
        return await self.mongo.transaction(
            lambda s: self.delete_in(resource_type, rid, s, if_match=expected)
        )

    async def delete_in(
        self,
        resource_type: str,
        rid: str,
        session: AsyncClientSession,
        *,
        if_match: int | None = None,
    ) -> WriteResult:
        """Delete inside an open transaction."""
        require_writable(resource_type)
        old_doc = await self.store.read_doc(resource_type, rid, session) if self.hooks else None
        stored = await self.store.delete(resource_type, rid, session, if_match=if_match)
        if stored is not None and old_doc is not None:
            await self._run_hooks(resource_type, orjson.loads(old_doc["raw"]), None, session)
        return WriteResult(stored, 204 if stored is None else 200)

    async def conditional_delete(self, resource_type: str, params: Params) -> WriteResult:
        """DELETE /Type?criteria: none -> 204, one -> delete it, many -> 412."""
        require_writable(resource_type)

        async def run(session: AsyncClientSession) -> WriteResult:
            ids = await self.match(resource_type, params, session)
            if len(ids) > 1:
                raise PreconditionFailed(f"criteria matched {len(ids)} {resource_type} resources")
            if not ids:
                return WriteResult(None, 204)
            return await self.delete_in(resource_type, ids[0], session)

        return await self.mongo.transaction(run)


def apply_json_patch(document: dict[str, Any], patch: object) -> dict[str, Any]:
    """Apply an RFC 6902 JSON Patch; 400 when malformed, 422 when it does not apply."""
    if not isinstance(patch, list) or not all(isinstance(op, dict) for op in patch):
        raise BadRequest("a JSON Patch body must be an array of operation objects")
    try:
        result = jsonpatch.JsonPatch(patch).apply(document)
    except jsonpatch.InvalidJsonPatch as exc:
        raise BadRequest(f"invalid JSON Patch: {exc}") from exc
    except (jsonpatch.JsonPatchConflict, jsonpatch.JsonPatchTestFailed) as exc:
        raise Unprocessable(f"JSON Patch does not apply: {exc}") from exc
    except Exception as exc:  # jsonpointer errors for bad paths
        raise Unprocessable(f"JSON Patch does not apply: {exc}") from exc
    if not isinstance(result, dict):
        raise Unprocessable("JSON Patch result is not a resource")
    return result


def _body(stored: Stored) -> dict[str, Any] | None:
    return orjson.loads(stored.raw) if stored.raw is not None else None
