"""`transaction` and `batch` Bundles posted to the base.

A transaction runs every entry in one MongoDB transaction: all or nothing. Entries are
processed in the order R4 prescribes (DELETE, POST, PUT/PATCH, GET); `urn:uuid:` fullUrls
of created resources are resolved in every reference of the Bundle. A batch runs each
entry on its own and reports each outcome.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
from pymongo.asynchronous.client_session import AsyncClientSession

from fhirserver.fhir.bundles import Entry, bundle_bytes
from fhirserver.fhir.errors import BadRequest, FhirError, PreconditionFailed
from fhirserver.fhir.service import (
    FhirService,
    WriteResult,
    parse_if_match,
    require_type,
    require_writable,
)
from fhirserver.fhir.validation import validate_resource
from fhirserver.storage.resources import Stored, format_instant, new_id

Doc = dict[str, Any]
SearchFn = Callable[[str, list[tuple[str, str]]], Awaitable[bytes]]
ReadCheckFn = Callable[[str, str], Awaitable[None]]  # 403/404 unless the caller may read

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


@dataclass
class _Req:
    index: int
    method: str
    rtype: str
    rid: str | None
    vid: str | None
    params: list[tuple[str, str]]
    full_url: str | None
    resource: Any
    if_match: str | None
    if_none_exist: list[tuple[str, str]] | None


def _parse_entry(i: int, entry: Any) -> _Req:
    where = f"Bundle.entry[{i}]"
    if not isinstance(entry, dict):
        raise BadRequest(f"{where} is not an object", expression=[where])
    request = entry.get("request")
    if not isinstance(request, dict):
        raise BadRequest(f"{where}.request is required", expression=[f"{where}.request"])
    method = str(request.get("method", "")).upper()
    if method not in _ORDER:
        raise BadRequest(
            f"{where}.request.method {method!r} is not supported",
            expression=[f"{where}.request.method"],
        )
    url = str(request.get("url", ""))
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    if not segments:
        raise BadRequest(f"{where}.request.url is required", expression=[f"{where}.request.url"])
    rtype = segments[0]
    rid = segments[1] if len(segments) > 1 else None
    vid = segments[3] if len(segments) > 3 and segments[2] == "_history" else None
    ine = request.get("ifNoneExist")
    full_url = entry.get("fullUrl")
    if full_url is not None and not isinstance(full_url, str):
        raise BadRequest(f"{where}.fullUrl must be a string", expression=[f"{where}.fullUrl"])
    return _Req(
        index=i,
        method=method,
        rtype=rtype,
        rid=rid,
        vid=vid,
        params=parse_qsl(parts.query, keep_blank_values=True),
        full_url=full_url,
        resource=entry.get("resource"),
        if_match=request.get("ifMatch"),
        if_none_exist=parse_qsl(str(ine).lstrip("?"), keep_blank_values=True) if ine else None,
    )


def _parse_bundle(body: object, expected: str | None) -> tuple[str, list[_Req]]:
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise BadRequest("the base accepts only a Bundle of type transaction or batch")
    btype = body.get("type")
    if btype not in ("transaction", "batch") or (expected and btype != expected):
        raise BadRequest(
            f"Bundle.type must be transaction or batch, not {btype!r}", expression=["Bundle.type"]
        )
    entries = body.get("entry") or []
    if not isinstance(entries, list):
        raise BadRequest("Bundle.entry must be an array", expression=["Bundle.entry"])
    return btype, [_parse_entry(i, e) for i, e in enumerate(entries)]


def _rewrite_refs(value: Any, mapping: dict[str, str]) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k == "reference" and isinstance(v, str) and v in mapping:
                out[k] = mapping[v]
            else:
                out[k] = _rewrite_refs(v, mapping)
        return out
    if isinstance(value, list):
        return [_rewrite_refs(v, mapping) for v in value]
    return value


def _references(value: Any) -> list[str]:
    """Every `reference` string inside a resource."""
    if isinstance(value, dict):
        found = [v for k, v in value.items() if k == "reference" and isinstance(v, str)]
        for v in value.values():
            found.extend(_references(v))
        return found
    if isinstance(value, list):
        return [ref for item in value for ref in _references(item)]
    return []


def _response(result: WriteResult, base_url: str) -> dict[str, Any]:
    status = {200: "200 OK", 201: "201 Created", 204: "204 No Content"}[result.status]
    resp: dict[str, Any] = {"status": status}
    stored = result.stored
    if stored is not None and not stored.deleted:
        resp["location"] = f"{stored.resource_type}/{stored.id}/_history/{stored.version}"
        resp["etag"] = stored.etag()
        resp["lastModified"] = format_instant(stored.last_updated)
    return resp


def _entry(result: WriteResult, base_url: str) -> Entry:
    s = result.stored
    raw = s.raw if s is not None and not s.deleted else None
    url = f"{base_url}/{s.resource_type}/{s.id}" if raw is not None and s is not None else None
    return Entry(full_url=url, raw=raw, response=_response(result, base_url))


class BundleProcessor:
    """Processes transaction and batch Bundles through the FhirService."""

    def __init__(
        self,
        service: FhirService,
        base_url: str,
        search: SearchFn,
        check_read: ReadCheckFn | None = None,
    ) -> None:
        self.service = service
        self.base_url = base_url
        self.search = search
        self.check_read = check_read

    async def process(self, body: object) -> bytes:
        """Run the Bundle; the response Bundle's bytes."""
        btype, reqs = _parse_bundle(body, None)
        if btype == "transaction":
            return await self._transaction(reqs)
        return await self._batch(reqs)

    async def _transaction(self, reqs: list[_Req]) -> bytes:
        full_urls = [r.full_url for r in reqs if r.full_url]
        if len(full_urls) != len(set(full_urls)):
            raise BadRequest("transaction entries must have distinct fullUrls")
        for r in reqs:
            require_type(r.rtype)
            if r.method not in ("GET", "HEAD"):
                require_writable(r.rtype)
            if r.resource is not None and r.method in ("POST", "PUT"):
                r.resource = validate_resource(r.resource, r.rtype)

        async def run(session: AsyncClientSession) -> list[Entry]:
            mapping: dict[str, str] = {}
            # Resolve creates first (conditional ones may map to existing resources).
            for r in reqs:
                if r.method == "POST" and r.full_url:
                    if r.if_none_exist is not None:
                        ids = await self.service.match(r.rtype, r.if_none_exist, session)
                        if len(ids) > 1:
                            raise PreconditionFailed(
                                f"Bundle.entry[{r.index}] ifNoneExist matched {len(ids)}"
                            )
                        if ids:
                            mapping[r.full_url] = f"{r.rtype}/{ids[0]}"
                            continue
                    r.rid = new_id()
                    mapping[r.full_url] = f"{r.rtype}/{r.rid}"
                elif r.method == "PUT" and r.full_url and r.rid:
                    mapping[r.full_url] = f"{r.rtype}/{r.rid}"
            await self._resolve_conditional_refs(reqs, mapping, session)
            results: dict[int, Entry] = {}
            for r in sorted(reqs, key=lambda q: _ORDER[q.method]):
                try:
                    results[r.index] = await self._one(r, mapping, session)
                except FhirError as exc:
                    exc.diagnostics = f"Bundle.entry[{r.index}]: {exc.diagnostics}"
                    raise
            return [results[i] for i in range(len(reqs))]

        entries = await self.service.mongo.transaction(run)
        return bundle_bytes("transaction-response", entries)

    async def _resolve_conditional_refs(
        self, reqs: list[_Req], mapping: dict[str, str], session: AsyncClientSession
    ) -> None:
        """Map conditional references (`Patient?identifier=x|1`) to the one match, else 412."""
        for r in reqs:
            for ref in _references(r.resource):
                if "?" not in ref or ref in mapping:
                    continue
                rtype, _, query = ref.partition("?")
                require_type(rtype)
                ids = await self.service.match(
                    rtype, parse_qsl(query, keep_blank_values=True), session
                )
                if len(ids) != 1:
                    raise PreconditionFailed(
                        f"Bundle.entry[{r.index}]: conditional reference {ref!r} matched "
                        f"{len(ids)} resources (exactly one required)"
                    )
                mapping[ref] = f"{rtype}/{ids[0]}"

    async def _one(self, r: _Req, mapping: dict[str, str], session: AsyncClientSession) -> Entry:
        svc = self.service
        if r.method == "GET" or r.method == "HEAD":
            return await self._read(r)
        if r.method == "DELETE":
            if r.rid:
                result = await svc.delete_in(
                    r.rtype, r.rid, session, if_match=parse_if_match(r.if_match)
                )
            else:
                ids = await svc.match(r.rtype, r.params, session)
                if len(ids) > 1:
                    raise PreconditionFailed(f"conditional delete matched {len(ids)}")
                result = (
                    (await svc.delete_in(r.rtype, ids[0], session))
                    if ids
                    else WriteResult(None, 204)
                )
            return _entry(result, self.base_url)
        resource = _rewrite_refs(r.resource, mapping) if r.resource is not None else None
        if r.method == "POST":
            if resource is None:
                raise BadRequest("POST entry needs a resource")
            if r.rid is None and r.full_url and r.full_url in mapping:
                # conditional create matched an existing resource
                existing = mapping[r.full_url].split("/", 1)[1]
                stored = await svc.store.read(r.rtype, existing, session)
                return _entry(WriteResult(stored, 200), self.base_url)
            if r.if_none_exist is not None and r.rid is None:
                ids = await svc.match(r.rtype, r.if_none_exist, session)
                if len(ids) > 1:
                    raise PreconditionFailed(f"ifNoneExist matched {len(ids)}")
                if ids:
                    stored = await svc.store.read(r.rtype, ids[0], session)
                    return _entry(WriteResult(stored, 200), self.base_url)
            return _entry(await svc.create_in(resource, session, rid=r.rid), self.base_url)
        if r.method == "PUT":
            if resource is None:
                raise BadRequest("PUT entry needs a resource")
            if r.rid is None:
                ids = await svc.match(r.rtype, r.params, session)
                if len(ids) > 1:
                    raise PreconditionFailed(f"conditional update matched {len(ids)}")
                if not ids:
                    return _entry(
                        await svc.create_in(resource, session, rid=resource.get("id")),
                        self.base_url,
                    )
                r.rid = ids[0]
            if resource.get("id") != r.rid:
                raise BadRequest(f"resource id {resource.get('id')!r} does not match {r.rid!r}")
            return _entry(
                await svc.update_in(resource, r.rid, session, if_match=parse_if_match(r.if_match)),
                self.base_url,
            )
        # PATCH: Binary-wrapped JSON Patch is the R4 way in a Bundle; accept a bare array too.
        if r.rid is None:
            raise BadRequest("PATCH entry needs Type/id")
        patch = _patch_body(r.resource)
        return _entry(
            await svc.patch_in(r.rtype, r.rid, patch, session, if_match=parse_if_match(r.if_match)),
            self.base_url,
        )

    async def _read(self, r: _Req) -> Entry:
        svc = self.service
        if r.rid is None:
            raw = await self.search(r.rtype, r.params)
            return Entry(full_url=None, raw=raw, response={"status": "200 OK"})
        if self.check_read is not None:
            await self.check_read(r.rtype, r.rid)
        stored: Stored = (
            await svc.vread(r.rtype, r.rid, r.vid) if r.vid else await svc.read(r.rtype, r.rid)
        )
        return Entry(
            full_url=f"{self.base_url}/{r.rtype}/{r.rid}",
            raw=stored.raw,
            response={
                "status": "200 OK",
                "etag": stored.etag(),
                "lastModified": format_instant(stored.last_updated),
            },
        )

    async def _batch(self, reqs: list[_Req]) -> bytes:
        entries: list[Entry] = []
        for r in reqs:
            try:
                require_type(r.rtype)
                if r.method not in ("GET", "HEAD"):
                    require_writable(r.rtype)
                if r.resource is not None and r.method in ("POST", "PUT"):
                    r.resource = validate_resource(r.resource, r.rtype)
                if r.method in ("GET", "HEAD"):
                    entries.append(await self._read(r))
                    continue
                entries.append(
                    await self.service.mongo.transaction(
                        lambda s, r=r: self._one(r, {}, s)  # type: ignore[misc]
                    )
                )
            except FhirError as exc:
                entries.append(
                    Entry(
                        full_url=None,
                        raw=None,
                        response={
                            "status": f"{exc.status} {_reason(exc.status)}",
                            "outcome": exc.outcome(),
                        },
                    )
                )
        return bundle_bytes("batch-response", entries)


def _patch_body(resource: Any) -> Any:
    if isinstance(resource, dict) and resource.get("resourceType") == "Binary":
        import base64

        try:
            return orjson.loads(base64.b64decode(resource.get("data", "")))
        except ValueError as exc:
            raise BadRequest("PATCH entry Binary.data is not a base64 JSON Patch") from exc
    return resource


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
