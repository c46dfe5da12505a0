"""Search execution: chains, near, keyset pages, totals, _include/_revinclude, subsetting.

Matches are served from stored bytes; only `_elements`/`_summary` subsetting parses JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson

from fhirserver.access.visibility import and_filters
from fhirserver.fhir.bundles import Entry, bundle_bytes
from fhirserver.fhir.errors import BadRequest, warning_outcome
from fhirserver.fhir.paging import (
    decode_cursor,
    encode_cursor,
    keyset_filter,
    reverse_sort,
    sort_values,
)
from fhirserver.fhir.search import (
    Include,
    SearchSpec,
    chain_filter,
    distance_km,
    parse_search,
)
from fhirserver.fhir.searchparams import SEARCH_PARAMS
from fhirserver.fhir.subsetting import subset
from fhirserver.fhir.types import RESOURCE_TYPES
from fhirserver.storage.resources import ResourceStore

if TYPE_CHECKING:
    from fhirserver.access.policy import AccessPolicy

Doc = dict[str, Any]
Params = list[tuple[str, str]]


@dataclass
class SearchLimits:
    """Server limits for one search."""

    default_count: int = 20
    max_count: int = 1000
    max_include: int = 1000
    max_chain_ids: int = 5000


@dataclass
class Page:
    """One page of matches plus what the Bundle needs around it."""

    matches: list[Doc]
    included: list[tuple[str, Doc]] = field(default_factory=list)
    total: int | None = None
    next_cursor: str | None = None
    prev_cursor: str | None = None


class Searcher:
    """Runs parsed searches against the store."""

    def __init__(self, store: ResourceStore, limits: SearchLimits) -> None:
        self.store = store
        self.limits = limits

    async def resolve_filter(
        self, spec: SearchSpec, strict: bool, policy: AccessPolicy | None = None
    ) -> Doc:
        """The spec's filter with chains and `near` turned into id constraints, narrowed to
        what `policy` lets the caller search (chained types too: no probing through them)."""
        clauses: list[Doc] = [spec.filter] if spec.filter else []
        if policy is not None:
            allowed = await policy.search_filter(spec.resource_type)
            if allowed:
                clauses.append(allowed)
        for chain in spec.chains:
            sub = parse_search(
                chain.target_type, chain.params, strict=strict, blind=self.store.blind
            )
            if sub.chains:
                raise BadRequest("chained parameters are supported one level deep")
            sub_filter = await self.resolve_filter(sub, strict, policy)
            ids = await self.store.ids(chain.target_type, sub_filter, self.limits.max_chain_ids)
            clauses.append(chain_filter(chain, ids))
        if spec.near is not None:
            lat, lng, km = spec.near
            docs = await self.store.find(
                spec.resource_type,
                {"$and": [*clauses, {"idx.near": {"$exists": True}}]}
                if clauses
                else {"idx.near": {"$exists": True}},
                projection={"idx.near": 1},
            )
            ids = [
                d["_id"]
                for d in docs
                if any(
                    distance_km(lat, lng, p["lat"], p["lng"]) <= km
                    for p in d.get("idx", {}).get("near", [])
                )
            ]
            clauses.append({"_id": {"$in": ids}})
        return and_filters(*clauses)

    async def page(
        self,
        spec: SearchSpec,
        cursor_token: str | None,
        strict: bool,
        policy: AccessPolicy | None = None,
    ) -> Page:
        """Fetch one page for `spec` starting at `cursor_token` (None = first page), of
        what `policy` (None: everything) lets the caller see."""
        query = await self.resolve_filter(spec, strict, policy)
        want_total = spec.total != "none"
        if spec.summary == "count":
            return Page(matches=[], total=await self.store.count(spec.resource_type, query))
        count = self.limits.default_count if spec.count is None else spec.count
        count = max(0, min(count, self.limits.max_count))
        total = await self.store.count(spec.resource_type, query) if want_total else None
        if count == 0:
            return Page(matches=[], total=total)
        cursor = decode_cursor(cursor_token) if cursor_token else None
        sort = spec.sort
        projection: Doc = {"raw": 1, "v": 1, "lu": 1, "srt": 1}
        if spec.includes:
            projection["idx"] = 1
        page_query = query
        if cursor is not None:
            keyset = keyset_filter(sort, cursor)
            page_query = {"$and": [query, keyset]} if query else keyset
        backwards = cursor is not None and not cursor.forward
        docs = await self.store.find(
            spec.resource_type,
            page_query,
            sort=reverse_sort(sort) if backwards else sort,
            limit=count + 1,
            projection=projection,
        )
        more = len(docs) > count
        docs = docs[:count]
        if backwards:
            docs.reverse()
        result = Page(matches=docs, total=total)
        if docs:
            first, last = sort_values(docs[0], sort), sort_values(docs[-1], sort)
            has_next = more if not backwards else True
            has_prev = (cursor is not None) if not backwards else more
            if has_next:
                result.next_cursor = encode_cursor(last, True)
            if has_prev:
                result.prev_cursor = encode_cursor(first, False)
        elif cursor is not None:
            # An empty page reached by a cursor: offer the way back (or forward).
            result.prev_cursor = encode_cursor(cursor.values, False) if cursor.forward else None
            result.next_cursor = None if cursor.forward else encode_cursor(cursor.values, True)
        result.included = await self.included(spec, docs, policy)
        return result

    async def included(
        self, spec: SearchSpec, docs: Sequence[Doc], policy: AccessPolicy | None = None
    ) -> list[tuple[str, Doc]]:
        """Resources pulled in by _include and _revinclude for this page's matches: only
        those `policy` lets the caller read."""

        async def allowed(rtype: str, query: Doc) -> Doc:
            return and_filters(query, await policy.include_filter(rtype)) if policy else query

        if not docs or not (spec.includes or spec.revincludes):
            return []
        seen: set[str] = {f"{spec.resource_type}/{d['_id']}" for d in docs}
        out: list[tuple[str, Doc]] = []
        for inc in spec.includes:
            refs = _include_refs(inc, docs)
            by_type: dict[str, list[str]] = {}
            for ref in refs:
                if ref in seen:
                    continue
                rtype, _, rid = ref.rpartition("/")
                rtype = rtype.rsplit("/", 1)[-1]
                if rtype in RESOURCE_TYPES and (inc.target_type in (None, rtype)):
                    by_type.setdefault(rtype, []).append(rid)
            for rtype, ids in by_type.items():
                for d in await self.store.find(
                    rtype, await allowed(rtype, {"_id": {"$in": ids}}),
                    limit=self.limits.max_include,
                ):
                    key = f"{rtype}/{d['_id']}"
                    if key not in seen:
                        seen.add(key)
                        out.append((rtype, d))
        targets = [f"{spec.resource_type}/{d['_id']}" for d in docs]
        for inc in spec.revincludes:
            params = _rev_params(inc, spec.resource_type)
            if not params:
                continue
            query = {"$or": [{f"idx.{p}": {"$in": targets}} for p in params]}
            query = await allowed(inc.source_type, query)
            for d in await self.store.find(inc.source_type, query, limit=self.limits.max_include):
                key = f"{inc.source_type}/{d['_id']}"
                if key not in seen:
                    seen.add(key)
                    out.append((inc.source_type, d))
        return out


def _include_refs(inc: Include, docs: Sequence[Doc]) -> list[str]:
    params = (
        [p.name for p in SEARCH_PARAMS.get(inc.source_type, {}).values() if p.type == "reference"]
        if inc.param == "*"
        else [inc.param]
    )
    refs: list[str] = []
    for d in docs:
        idx = d.get("idx") or {}
        for p in params:
            refs.extend(v for v in idx.get(p, []) if isinstance(v, str))
    return refs


def _rev_params(inc: Include, target_type: str) -> list[str]:
    defs = SEARCH_PARAMS.get(inc.source_type, {})
    if inc.param == "*":
        return [
            p.name
            for p in defs.values()
            if p.type == "reference" and (not p.targets or target_type in p.targets)
        ]
    param = defs.get(inc.param)
    if param is None or (param.targets and target_type not in param.targets):
        return []
    return [param.name]


def search_bundle(
    spec: SearchSpec,
    page: Page,
    *,
    base_url: str,
    path: str,
    cursor_token: str | None = None,
) -> bytes:
    """The searchset Bundle for one page, with self/first/next/previous links."""
    query = list(spec.passthrough)
    self_params = [*query, ("_cursor", cursor_token)] if cursor_token else list(query)
    links = [("self", _url(base_url, path, self_params))]
    links.append(("first", _url(base_url, path, query)))
    if page.next_cursor:
        links.append(("next", _url(base_url, path, [*query, ("_cursor", page.next_cursor)])))
    if page.prev_cursor:
        links.append(("previous", _url(base_url, path, [*query, ("_cursor", page.prev_cursor)])))
    entries: list[Entry] = []
    for doc in page.matches:
        entries.append(_entry(base_url, spec.resource_type, doc, "match", spec))
    for rtype, doc in page.included:
        entries.append(_entry(base_url, rtype, doc, "include", spec))
    if spec.warnings:
        entries.append(
            Entry(
                full_url=None,
                raw=orjson.dumps(warning_outcome(spec.warnings)),
                search_mode="outcome",
            )
        )
    return bundle_bytes("searchset", entries, total=page.total, links=links)


def _entry(base_url: str, rtype: str, doc: Doc, mode: str, spec: SearchSpec) -> Entry:
    raw: bytes = doc["raw"]
    if spec.elements is not None or spec.summary in ("true", "text", "data"):
        raw = orjson.dumps(subset(orjson.loads(raw), spec.summary, spec.elements))
    return Entry(full_url=f"{base_url}/{rtype}/{doc['_id']}", raw=raw, search_mode=mode)


def _url(base_url: str, path: str, params: Params) -> str:
    return f"{base_url}/{path}" + (f"?{urlencode(params)}" if params else "")
