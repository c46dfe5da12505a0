"""Parsing of FHIR search query parameters into a MongoDB filter, sort, paging and includes.

The filter targets the stored shape of docs/search-index.md. Semantics follow the FHIR R4
search specification; where the spec leaves room, the choice is documented at the builder.

Note (SecantusDB): ``$or`` *inside* ``$elemMatch`` is rejected by SecantusDB although
mongod accepts it, so "any value v with (A or B)" is always written as the equivalent
``$or`` of one ``$elemMatch`` per alternative.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from fhirserver.fhir.errors import BadRequest
from fhirserver.fhir.indexing import (
    MAX_DT,
    MIN_DT,
    DateValue,
    ceil_ms,
    floor_ms,
    normalize,
    parse_date,
    split_reference,
)
from fhirserver.fhir.searchparams import SEARCH_PARAMS, SearchParam, get_param
from fhirserver.fhir.types import RESOURCE_TYPES
from fhirserver.phi.blind import BlindIndex

RESULT_PARAMS: frozenset[str] = frozenset(
    {
        "_count",
        "_sort",
        "_include",
        "_revinclude",
        "_summary",
        "_elements",
        "_total",
        "total",
        "_format",
        "_pretty",
        "_cursor",
        "_getpages",
        "_getpagesoffset",
    }
)
# Paging state: understood but not echoed in `passthrough` (the caller adds its own).
_PAGING_PARAMS = frozenset({"_cursor", "_getpages", "_getpagesoffset"})

_PREFIXES = frozenset({"eq", "ne", "lt", "le", "gt", "ge", "sa", "eb", "ap"})
_SUMMARY_VALUES = frozenset({"true", "text", "data", "count", "false"})
_TOTAL_VALUES = frozenset({"none", "estimate", "accurate"})
_MODIFIERS: dict[str, frozenset[str]] = {
    "token": frozenset({"missing", "not", "text"}),
    "string": frozenset({"missing", "exact", "contains"}),
    "date": frozenset({"missing"}),
    "number": frozenset({"missing"}),
    "quantity": frozenset({"missing"}),
    "uri": frozenset({"missing", "below", "above"}),
    "reference": frozenset({"missing"}),  # plus resource-type modifiers
    "special": frozenset(),
}
_DEFAULT_NEAR_KM = 50.0
_EARTH_RADIUS_KM = 6371.0088
_UNITS_KM = {"km": 1.0, "m": 0.001, "mi": 1.609344, "[mi_i]": 1.609344}


@dataclass
class Chain:
    """One chained parameter, e.g. ``practitioner.name=foo``."""

    param: SearchParam  # the reference param on the base type
    target_type: str  # resolved target type
    params: list[tuple[str, str]]  # the sub-search on target_type, e.g. [("name", "foo")]


@dataclass
class Include:
    """An ``_include``/``_revinclude``. ``param == "*"`` means every reference param;
    ``_revinclude=*`` has ``source_type == "*"``."""

    source_type: str
    param: str
    target_type: str | None
    iterate: bool


@dataclass
class SearchSpec:
    """A parsed search: filter (without chains), chains, sort, paging and result options."""

    resource_type: str
    filter: dict[str, Any]
    chains: list[Chain] = field(default_factory=list)
    sort: list[tuple[str, int]] = field(default_factory=list)
    count: int | None = None
    includes: list[Include] = field(default_factory=list)
    revincludes: list[Include] = field(default_factory=list)
    summary: str | None = None
    elements: list[str] | None = None
    total: str | None = None
    warnings: list[str] = field(default_factory=list)
    near: tuple[float, float, float] | None = None
    passthrough: list[tuple[str, str]] = field(default_factory=list)


# --------------------------------------------------------------------------- helpers


def _bad(name: str, value: str, why: str) -> BadRequest:
    return BadRequest(f"Invalid value '{value}' for search parameter '{name}': {why}")


def _split(value: str, sep: str) -> list[str]:
    """Split on `sep` not preceded by a backslash; escapes are kept (see `_unescape`)."""
    parts: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            cur.append(value[i : i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def _split_once(value: str, sep: str) -> tuple[str, str] | None:
    parts = _split(value, sep)
    if len(parts) == 1:
        return None
    return parts[0], sep.join(parts[1:])


_ESC_RE = re.compile(r"\\(.)")


def _unescape(value: str) -> str:
    return _ESC_RE.sub(r"\1", value)


def _any_of(conds: list[dict[str, Any]]) -> dict[str, Any]:
    if len(conds) == 1:
        return conds[0]
    return {"$or": conds}


def _all_of(conds: list[dict[str, Any]]) -> dict[str, Any]:
    if not conds:
        return {}
    if len(conds) == 1:
        return conds[0]
    return {"$and": conds}


def _elem(fld: str, alts: list[dict[str, Any]]) -> dict[str, Any]:
    """Some element of array `fld` satisfies one of `alts` (each a conjunction of subfields).

    One subfield -> dotted path; several -> $elemMatch; several alternatives -> $or of those
    (SecantusDB rejects $or inside $elemMatch).
    """
    out: list[dict[str, Any]] = []
    for alt in alts:
        if len(alt) == 1:
            ((k, v),) = alt.items()
            out.append({f"{fld}.{k}" if k else fld: v})
        else:
            out.append({fld: {"$elemMatch": alt}})
    return _any_of(out)


# --------------------------------------------------------------------------- token


def _token(fld: str, name: str, values: list[str], modifier: str | None) -> dict[str, Any] | None:
    conds: list[dict[str, Any]] = []
    for raw in values:
        if modifier == "text":
            text = normalize(_unescape(raw))
            if text:
                conds.append({f"{fld}.t": {"$regex": re.escape(text)}})
            continue
        pair = _split_once(raw, "|")
        if pair is None:
            conds.append({f"{fld}.c": _unescape(raw)})
            continue
        system, code = _unescape(pair[0]), _unescape(pair[1])
        if not system and not code:
            raise _bad(name, raw, "a token needs a system or a code")
        if not system:
            conds.append({fld: {"$elemMatch": {"s": None, "c": code}}})
        elif not code:
            conds.append({f"{fld}.s": system})
        else:
            conds.append({fld: {"$elemMatch": {"s": system, "c": code}}})
    if not conds:
        return None
    if modifier == "not":
        # resources with no matching value at all, including those with no value
        return {"$nor": conds}
    return _any_of(conds)


# --------------------------------------------------------------------------- string


def _string(fld: str, values: list[str], modifier: str | None) -> dict[str, Any] | None:
    conds: list[dict[str, Any]] = []
    for raw in values:
        v = _unescape(raw)
        if modifier == "exact":
            conds.append({f"{fld}.e": v})
            continue
        n = normalize(v)
        if not n:
            continue
        pattern = re.escape(n) if modifier == "contains" else "^" + re.escape(n)
        conds.append({f"{fld}.n": {"$regex": pattern}})
    return _any_of(conds) if conds else None


# --------------------------------------------------------------------------- date


def _prefix(name: str, raw: str) -> tuple[str, str]:
    if len(raw) >= 2 and raw[:2].isalpha():
        p = raw[:2]
        if p not in _PREFIXES:
            raise _bad(name, raw, f"unknown prefix '{p}'")
        return p, raw[2:]
    return "eq", raw


def _parse_search_date(name: str, raw: str, value: str) -> DateValue:
    dv = parse_date(value)
    if dv is None:
        raise _bad(
            name,
            raw,
            "expected a date as YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss][Z|+hh:mm]",
        )
    return dv


def _approx_days(d1: date, d2: date) -> tuple[date, date]:
    today = datetime.now(UTC).date()
    gap = abs((today - d1).days)
    delta = timedelta(days=math.ceil(gap * 0.1))
    lo = d1 - delta if d1 - date.min > delta else date.min
    hi = d2 + delta if date.max - d2 > delta else date.max
    return lo, hi


def _range_conditions(
    prefix: str, s1: Any, s2: Any, lo: str, hi: str, *, inclusive: bool
) -> list[dict[str, Any]]:
    """Alternatives for target range [lo, hi) (or [lo, hi] with inclusive=True, for
    calendar-day strings) against search range [s1, s2) (or [s1, s2]), per FHIR prefix."""
    lt, le, gt, ge = ("$lt", "$lte", "$gt", "$gte")
    contained = {lo: {ge: s1}, hi: {le: s2}}
    if prefix == "eq":
        return [contained]
    if prefix == "ne":
        return [{lo: {lt: s1}}, {hi: {gt: s2}}]
    if prefix == "gt":
        return [{hi: {gt: s2}}]
    if prefix == "lt":
        return [{lo: {lt: s1}}]
    if prefix == "ge":
        return [{hi: {gt: s2}}, contained]
    if prefix == "le":
        return [{lo: {lt: s1}}, contained]
    if prefix == "sa":
        return [{lo: {gt: s2} if inclusive else {ge: s2}}]
    if prefix == "eb":
        return [{hi: {lt: s1} if inclusive else {le: s1}}]
    # ap: overlaps the (widened) search range
    return [{lo: {le: s2} if inclusive else {lt: s2}, hi: {ge: s1} if inclusive else {gt: s1}}]


def _date(fld: str, name: str, values: list[str]) -> dict[str, Any]:
    conds: list[dict[str, Any]] = []
    for raw in values:
        prefix, value = _prefix(name, _unescape(raw))
        dv = _parse_search_date(name, raw, value)
        if not dv.has_time:
            # calendar-day semantics on dl/dh: a day matches in the value's own offset
            d1, d2 = dv.day_lo, dv.day_hi
            if prefix == "ap":
                a, b = _approx_days(date.fromisoformat(d1), date.fromisoformat(d2))
                d1, d2 = _fmt_day(a), _fmt_day(b)
            alts = _range_conditions(prefix, d1, d2, "dl", "dh", inclusive=True)
        else:
            s1, s2 = floor_ms(dv.lo), ceil_ms(dv.hi)
            if prefix == "ap":
                s1, s2 = _approx_instants(s1, s2)
            alts = _range_conditions(prefix, s1, s2, "lo", "hi", inclusive=False)
        conds.append(_elem(fld, alts))
    return _any_of(conds)


def _fmt_day(d: date) -> str:
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}"


def _approx_instants(s1: datetime, s2: datetime) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    delta = abs(now - s1) * 0.1
    lo = s1 - delta if s1 - MIN_DT > delta else MIN_DT
    hi = s2 + delta if MAX_DT - s2 > delta else MAX_DT
    return floor_ms(lo), ceil_ms(hi)


def _last_updated(name: str, values: list[str]) -> dict[str, Any]:
    """`lu` is one instant t (range [t, t+1ms)); a date-only search value is a UTC day."""
    conds: list[dict[str, Any]] = []
    for raw in values:
        prefix, value = _prefix(name, _unescape(raw))
        dv = _parse_search_date(name, raw, value)
        s1, s2 = floor_ms(dv.lo), ceil_ms(dv.hi)
        if prefix == "ap":
            s1, s2 = _approx_instants(s1, s2)
        if prefix in ("eq", "ap"):
            conds.append({"lu": {"$gte": s1, "$lt": s2}})
        elif prefix == "ne":
            conds.append({"$or": [{"lu": {"$lt": s1}}, {"lu": {"$gte": s2}}]})
        elif prefix in ("gt", "sa"):
            conds.append({"lu": {"$gte": s2}})
        elif prefix in ("lt", "eb"):
            conds.append({"lu": {"$lt": s1}})
        elif prefix == "ge":
            conds.append({"lu": {"$gte": s1}})
        else:  # le
            conds.append({"lu": {"$lt": s2}})
    return _any_of(conds)


# --------------------------------------------------------------------------- number / quantity


def _decimal(name: str, raw: str, value: str) -> tuple[float, float, float]:
    """(value, lo, hi): the value and the range [lo, hi) its significant digits imply."""
    try:
        d = Decimal(value)
    except InvalidOperation:
        raise _bad(name, raw, "expected a number") from None
    if not d.is_finite():
        raise _bad(name, raw, "expected a finite number")
    exp = d.as_tuple().exponent
    assert isinstance(exp, int)
    half = Decimal(5).scaleb(exp - 1)
    return float(d), float(d - half), float(d + half)


def _number_alts(prefix: str, v: float, lo: float, hi: float) -> list[dict[str, Any]]:
    if prefix == "eq":
        return [{"$gte": lo, "$lt": hi}]
    if prefix == "ne":
        return [{"$lt": lo}, {"$gte": hi}]
    if prefix in ("gt", "sa"):
        return [{"$gt": v}]
    if prefix in ("lt", "eb"):
        return [{"$lt": v}]
    if prefix == "ge":
        return [{"$gte": v}]
    if prefix == "le":
        return [{"$lte": v}]
    d = abs(v) * 0.1  # ap: within 10%
    return [{"$gte": v - d, "$lte": v + d}]


def _number(fld: str, name: str, values: list[str]) -> dict[str, Any]:
    conds: list[dict[str, Any]] = []
    for raw in values:
        prefix, value = _prefix(name, _unescape(raw))
        v, lo, hi = _decimal(name, raw, value)
        alts = [{fld: {"$elemMatch": a}} for a in _number_alts(prefix, v, lo, hi)]
        conds.append(_any_of(alts))
    return _any_of(conds)


def _quantity(fld: str, name: str, values: list[str]) -> dict[str, Any]:
    conds: list[dict[str, Any]] = []
    for raw in values:
        parts = [_unescape(p) for p in _split(raw, "|")]
        if len(parts) not in (1, 3):
            raise _bad(name, raw, "expected [prefix]number[|system|code]")
        prefix, value = _prefix(name, parts[0])
        v, lo, hi = _decimal(name, raw, value)
        extra: dict[str, Any] = {}
        if len(parts) == 3:
            if parts[1]:
                extra["s"] = parts[1]
            if parts[2]:
                extra["c"] = parts[2]
        alts = [{"v": a, **extra} for a in _number_alts(prefix, v, lo, hi)]
        conds.append(_elem(fld, alts))
    return _any_of(conds)


# --------------------------------------------------------------------------- uri / reference


def _uri(fld: str, values: list[str], modifier: str | None) -> dict[str, Any]:
    conds: list[dict[str, Any]] = []
    for raw in values:
        v = _unescape(raw)
        if modifier == "below":
            conds.append({fld: {"$regex": "^" + re.escape(v)}})
        elif modifier == "above":
            cuts = [i for i, ch in enumerate(v) if ch == "/"]
            prefixes = {
                v[:i] for i in cuts if 0 < i < len(v) - 1 and "/" not in (v[i - 1], v[i + 1])
            } | {v}
            conds.append({fld: {"$in": sorted(prefixes)}})
        else:
            conds.append({fld: v})
    return _any_of(conds)


_ABSOLUTE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def _reference(
    fld: str, sp: SearchParam, values: list[str], type_modifier: str | None
) -> dict[str, Any]:
    exact: list[str] = []
    conds: list[dict[str, Any]] = []
    allowed = (type_modifier,) if type_modifier else sp.targets
    for raw in values:
        ref, rtype = split_reference(_unescape(raw))
        if not ref:
            continue
        if _ABSOLUTE_RE.match(ref):
            # absolute URL: match its trailing Type/id (base stripped) or the URL as stored
            exact.append(ref)
            if rtype is not None:
                exact.append(ref[ref.rfind(rtype + "/") :])
        elif "/" in ref:
            if rtype is None:
                raise _bad(sp.name, raw, "expected id, Type/id or an absolute URL")
            if allowed and rtype not in allowed:
                raise _bad(sp.name, raw, f"type {rtype} is not allowed here ({', '.join(allowed)})")
            exact.append(ref)
        else:
            if not _ID_RE.fullmatch(ref):
                raise _bad(sp.name, raw, "not a valid resource id")
            if allowed:
                exact.extend(f"{t}/{ref}" for t in allowed)
            else:
                conds.append({fld: {"$regex": f"(^|/)[A-Z][A-Za-z]+/{re.escape(ref)}$"}})
    if exact:
        conds.insert(0, {fld: {"$in": list(dict.fromkeys(exact))}})
    if not conds:
        return {fld: {"$in": []}}
    return _any_of(conds)


def chain_filter(chain: Chain, ids: list[str]) -> dict[str, Any]:
    """The filter on the base type for a resolved chain: references to any of `ids`."""
    return {f"idx.{chain.param.name}": {"$in": [f"{chain.target_type}/{i}" for i in ids]}}


# --------------------------------------------------------------------------- blinded (PHI)

_ENCRYPTED = "is encrypted at rest and searched by blind-index tokens (docs/phi.md)"


def _tokens_cond(fld: str, tokens: list[str]) -> dict[str, Any]:
    """Some stored token equals one of `tokens` (one value: an indexed equality)."""
    unique = list(dict.fromkeys(tokens))
    return {fld: unique[0]} if len(unique) == 1 else {fld: {"$in": unique}}


def _blind_string(
    blind: BlindIndex, rt: str, name: str, values: list[str], modifier: str | None
) -> dict[str, Any] | None:
    """Starts-with via prefix tokens, `:exact` via the exact-value token."""
    param = blind.field(rt, name)
    if modifier == "contains":
        raise BadRequest(
            f"Modifier ':contains' is not supported on '{name}': the parameter {_ENCRYPTED}; "
            "search by the start of a value (default) or use ':exact'"
        )
    tokens: list[str] = []
    for raw in values:
        v = _unescape(raw)
        if modifier == "exact":
            tokens.append(blind.token(rt, param, "x", v))
            continue
        n = normalize(v)
        if n:
            tokens.append(blind.token(rt, param, "p", n))
    return _tokens_cond(f"idx.{param}", tokens) if tokens else None


def _blind_token(
    blind: BlindIndex, rt: str, name: str, values: list[str], modifier: str | None
) -> dict[str, Any] | None:
    """code, system|code, |code and system| via their tokens; `:not` as their negation."""
    param = blind.field(rt, name)
    if modifier == "text":
        raise BadRequest(
            f"Modifier ':text' is not supported on '{name}': the parameter {_ENCRYPTED}"
        )
    tokens: list[str] = []
    for raw in values:
        pair = _split_once(raw, "|")
        if pair is None:
            tokens.append(blind.token(rt, param, "c", _unescape(raw)))
            continue
        system, code = _unescape(pair[0]), _unescape(pair[1])
        if not system and not code:
            raise _bad(name, raw, "a token needs a system or a code")
        if not code:
            tokens.append(blind.token(rt, param, "s", system))
        else:
            tokens.append(blind.token(rt, param, "sc", f"{system}|{code}"))
    if not tokens:
        return None
    cond = _tokens_cond(f"idx.{param}", tokens)
    return {"$nor": [cond]} if modifier == "not" else cond


def _blind_date(blind: BlindIndex, rt: str, name: str, values: list[str]) -> dict[str, Any]:
    """Equality (and `ne`) at year, month or day precision via date tokens."""
    param = blind.field(rt, name)
    fld = f"idx.{param}"
    eq: list[str] = []
    ne: list[str] = []
    for raw in values:
        prefix, value = _prefix(name, _unescape(raw))
        dv = _parse_search_date(name, raw, value)
        if prefix not in ("eq", "ne") or dv.has_time:
            raise _bad(
                name,
                raw,
                f"the parameter {_ENCRYPTED}: only YYYY, YYYY-MM or YYYY-MM-DD, with no prefix "
                "(or eq/ne), can be searched; ranges (lt, gt, le, ge, sa, eb, ap) cannot",
            )
        (eq if prefix == "eq" else ne).append(blind.token(rt, param, "d", value.strip()))
    conds: list[dict[str, Any]] = []
    if eq:
        conds.append(_tokens_cond(fld, eq))
    for tok in ne:
        conds.append({"$and": [{fld: {"$exists": True}}, {fld: {"$ne": tok}}]})
    return _any_of(conds)


# --------------------------------------------------------------------------- near


def distance_km(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Great-circle (haversine) distance in km."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * _EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def _parse_near(name: str, raw: str) -> tuple[float, float, float]:
    parts = [_unescape(p).strip() for p in _split(raw, "|")]
    if len(parts) < 2 or len(parts) > 4:
        raise _bad(name, raw, "expected latitude|longitude[|distance[|units]]")
    try:
        lat, lng = float(parts[0]), float(parts[1])
        dist = float(parts[2]) if len(parts) > 2 and parts[2] else _DEFAULT_NEAR_KM
    except ValueError:
        raise _bad(name, raw, "latitude, longitude and distance must be numbers") from None
    units = parts[3] if len(parts) > 3 and parts[3] else "km"
    if units not in _UNITS_KM:
        raise _bad(name, raw, f"unknown distance units '{units}' (km, m, mi, [mi_i])")
    if not (-90 <= lat <= 90 and -180 <= lng <= 180) or not math.isfinite(dist) or dist < 0:
        raise _bad(name, raw, "latitude/longitude out of range or negative distance")
    return lat, lng, dist * _UNITS_KM[units]


def _near_filter(fld: str, lat: float, lng: float, km: float) -> dict[str, Any]:
    """A lat/lng bounding box that contains every point within `km` of (lat, lng)."""
    r = km / _EARTH_RADIUS_KM
    dlat = math.degrees(r)
    lat_lo, lat_hi = max(-90.0, lat - dlat), min(90.0, lat + dlat)
    lat_cond = {"$gte": lat_lo, "$lte": lat_hi}
    if abs(math.radians(lat)) + r >= math.pi / 2 or r >= math.pi / 2:
        return {f"{fld}.lat": lat_cond}
    dlng = math.degrees(math.asin(min(1.0, math.sin(r) / math.cos(math.radians(lat)))))
    lo, hi = lng - dlng, lng + dlng
    boxes: list[tuple[float, float]]
    if lo < -180:
        boxes = [(lo + 360, 180.0), (-180.0, hi)]
    elif hi > 180:
        boxes = [(lo, 180.0), (-180.0, hi - 360)]
    else:
        boxes = [(lo, hi)]
    return _elem(fld, [{"lat": lat_cond, "lng": {"$gte": a, "$lte": b}} for a, b in boxes])


# --------------------------------------------------------------------------- parse


def _missing(name: str, fld: str, value: str) -> dict[str, Any]:
    v = value.strip().lower()
    if v not in ("true", "false"):
        raise _bad(f"{name}:missing", value, "expected true or false")
    return {fld: {"$exists": v == "false"}}


class _Parser:
    def __init__(self, resource_type: str, strict: bool, blind: BlindIndex | None) -> None:
        self.rt = resource_type
        self.strict = strict
        self.blind = blind
        self.spec = SearchSpec(resource_type=resource_type, filter={})
        self.conds: list[dict[str, Any]] = []

    def unsupported(self, message: str) -> None:
        if self.strict:
            raise BadRequest(message)
        self.spec.warnings.append(message)

    def keep(self, key: str, value: str) -> None:
        self.spec.passthrough.append((key, value))

    def run(self, params: list[tuple[str, str]]) -> SearchSpec:
        for key, value in params:
            key, value = key.strip(), value.strip()
            if not key or value == "":
                continue  # FHIR: a parameter without a value is ignored
            base, _, modifier = key.partition(":")
            if "." in key and not base.startswith("_"):
                self.chain(key, value)
            elif base in RESULT_PARAMS:
                self.result_param(key, base, modifier, value)
            elif base == "_id":
                self.id_param(key, modifier, value)
            elif base == "_lastUpdated":
                if modifier == "missing":
                    self.unsupported("Modifier ':missing' is not supported on _lastUpdated")
                    continue
                if modifier:
                    self.unsupported(f"Unknown modifier ':{modifier}' on _lastUpdated: ignored")
                    continue
                self.conds.append(_last_updated(base, _split(value, ",")))
                self.keep(key, value)
            else:
                self.filter_param(key, base, modifier, value)
        keys = [k for k, _ in self.spec.sort]
        if "_id" in keys:  # unique: later keys can never matter
            del self.spec.sort[keys.index("_id") + 1 :]
        elif self.spec.sort:
            self.spec.sort.append(("_id", self.spec.sort[-1][1]))
        else:
            self.spec.sort = [("_id", 1)]
        self.spec.filter = _all_of(self.conds)
        return self.spec

    # ---- filters

    def filter_param(self, key: str, base: str, modifier: str, value: str) -> None:
        sp = get_param(self.rt, base)
        if sp is None:
            self.unsupported(f"Unknown search parameter '{base}' for {self.rt}: ignored")
            return
        blind = self.blind  # this parameter's values are PHI: searched by blind-index tokens
        if blind is not None and not blind.covers(self.rt, sp.name):
            blind = None
        fld = f"idx.{blind.field(self.rt, sp.name) if blind is not None else sp.name}"
        if modifier == "missing":
            self.conds.append(_missing(base, fld, value))
            self.keep(key, value.lower())
            return
        type_modifier: str | None = None
        if modifier and modifier not in _MODIFIERS[sp.type]:
            if sp.type == "reference" and modifier[:1].isupper() and modifier.isalpha():
                if sp.targets and modifier not in sp.targets:
                    raise BadRequest(
                        f"Invalid type modifier ':{modifier}' for search parameter '{base}': "
                        f"expected one of {', '.join(sp.targets)}"
                    )
                type_modifier = modifier
            else:
                self.unsupported(
                    f"Unknown modifier ':{modifier}' for search parameter '{base}': ignored"
                )
                return
        values = _split(value, ",")
        cond: dict[str, Any] | None
        if blind is not None:
            if sp.type == "string":
                cond = _blind_string(blind, self.rt, base, values, modifier or None)
            elif sp.type == "token":
                cond = _blind_token(blind, self.rt, base, values, modifier or None)
            else:
                cond = _blind_date(blind, self.rt, base, values)
        elif sp.type == "token":
            cond = _token(fld, base, values, modifier or None)
        elif sp.type == "string":
            cond = _string(fld, values, modifier or None)
        elif sp.type == "date":
            cond = _date(fld, base, values)
        elif sp.type == "reference":
            cond = _reference(fld, sp, values, type_modifier)
        elif sp.type == "number":
            cond = _number(fld, base, values)
        elif sp.type == "quantity":
            cond = _quantity(fld, base, values)
        elif sp.type == "uri":
            cond = _uri(fld, values, modifier or None)
        else:  # special: near
            if len(values) > 1:
                raise _bad(base, value, "only one location may be given")
            if self.spec.near is not None:
                raise BadRequest(f"Search parameter '{base}' may be given only once")
            lat, lng, km = _parse_near(base, value)
            self.spec.near = (lat, lng, km)
            cond = _near_filter(fld, lat, lng, km)
        if cond is None:
            return
        self.conds.append(cond)
        self.keep(key, value)

    def id_param(self, key: str, modifier: str, value: str) -> None:
        if modifier:
            self.unsupported(f"Unknown modifier ':{modifier}' on _id: ignored")
            return
        ids = [_unescape(v).strip() for v in _split(value, ",")]
        ids = [i for i in ids if i]
        self.conds.append({"_id": ids[0]} if len(ids) == 1 else {"_id": {"$in": ids}})
        self.keep(key, value)

    def chain(self, key: str, value: str) -> None:
        head, _, rest = key.partition(".")
        name, _, type_mod = head.partition(":")
        sp = get_param(self.rt, name)
        if sp is None:
            self.unsupported(f"Unknown search parameter '{name}' for {self.rt}: ignored")
            return
        if sp.type != "reference":
            raise BadRequest(
                f"Invalid chained search '{key}': '{name}' is not a reference parameter"
            )
        if type_mod:
            if sp.targets and type_mod not in sp.targets:
                raise BadRequest(
                    f"Invalid chained search '{key}': type {type_mod} is not a target of "
                    f"'{name}' ({', '.join(sp.targets)})"
                )
            target = type_mod
        else:
            candidates = [t for t in sp.targets if t in RESOURCE_TYPES] or list(sp.targets)
            if len(candidates) != 1:
                raise BadRequest(
                    f"Ambiguous chained search '{key}': '{name}' may refer to several types; "
                    f"use '{name}:<Type>.{rest}'"
                )
            target = candidates[0]
        if target not in SEARCH_PARAMS:
            self.unsupported(f"Chained search '{key}': type {target} is not searchable: ignored")
            return
        sub_base = rest.partition(":")[0].partition(".")[0]
        if not rest or sub_base in RESULT_PARAMS:
            raise BadRequest(f"Invalid chained search '{key}'")
        sub = parse_search(target, [(rest, value)], strict=self.strict, blind=self.blind)
        if sub.warnings:
            self.unsupported(f"Chained search '{key}' not understood: ignored ({sub.warnings[0]})")
            return
        if not sub.filter and not sub.chains:
            return
        self.spec.chains.append(Chain(sp, target, [(rest, value)]))
        self.keep(key, value)

    # ---- result parameters

    def result_param(self, key: str, base: str, modifier: str, value: str) -> None:
        if base in ("_include", "_revinclude"):
            if modifier not in ("", "iterate", "recurse"):
                self.unsupported(f"Unknown modifier ':{modifier}' on {base}: ignored")
                return
            inc = self.include(base, value, modifier != "")
            if inc is not None:
                (self.spec.includes if base == "_include" else self.spec.revincludes).append(inc)
                self.keep(key, value)
            return
        if modifier:
            self.unsupported(f"Unknown modifier ':{modifier}' on {base}: ignored")
            return
        if base == "_count":
            try:
                count = int(value)
            except ValueError:
                count = -1
            if count < 0:
                raise _bad(base, value, "expected a non-negative integer")
            self.spec.count = count
            self.keep(base, str(count))
        elif base == "_sort":
            self.sort(value)
        elif base == "_summary":
            if value not in _SUMMARY_VALUES:
                raise _bad(base, value, "expected true, text, data, count or false")
            self.spec.summary = value
            self.keep(base, value)
        elif base == "_elements":
            elements = [e.strip() for e in value.split(",") if e.strip()]
            self.spec.elements = [*(self.spec.elements or []), *elements]
            self.keep(base, ",".join(elements))
        elif base in ("_total", "total"):
            if value not in _TOTAL_VALUES:
                raise _bad(base, value, "expected none, estimate or accurate")
            self.spec.total = value
            self.keep(base, value)
        elif base not in _PAGING_PARAMS:  # _format, _pretty
            self.keep(base, value)

    def sort(self, value: str) -> None:
        keys: list[str] = []
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            direction = -1 if item.startswith("-") else 1
            name = item.lstrip("-")
            if name == "_id":
                fld = "_id"
            elif name == "_lastUpdated":
                fld = "lu"
            else:
                sp = get_param(self.rt, name)
                if sp is None or sp.type == "special":
                    raise _bad("_sort", value, f"'{name}' is not a sortable parameter of {self.rt}")
                if self.blind is not None and self.blind.covers(self.rt, name):
                    raise _bad("_sort", value, f"'{name}' {_ENCRYPTED} and cannot be sorted by")
                fld = f"srt.{name}"
            if all(f != fld for f, _ in self.spec.sort):
                self.spec.sort.append((fld, direction))
            keys.append(item)
        if keys:
            self.keep("_sort", ",".join(keys))

    def include(self, base: str, value: str, iterate: bool) -> Include | None:
        parts = value.split(":")
        if value == "*":
            return Include(self.rt if base == "_include" else "*", "*", None, iterate)
        if len(parts) not in (2, 3) or not all(parts):
            raise _bad(base, value, "expected SourceType:param[:TargetType] or *")
        src, pname = parts[0], parts[1]
        target = parts[2] if len(parts) == 3 else None
        if src not in SEARCH_PARAMS:
            self.unsupported(f"{base}={value}: type {src} is not supported: ignored")
            return None
        if base == "_include" and src != self.rt and not iterate:
            self.unsupported(f"{base}={value}: source type must be {self.rt}: ignored")
            return None
        if pname != "*":
            sp = get_param(src, pname)
            if sp is None or sp.type != "reference":
                self.unsupported(f"{base}={value}: {src} has no reference parameter '{pname}'")
                return None
            if target is not None and sp.targets and target not in sp.targets:
                raise _bad(base, value, f"{target} is not a target of {src}:{pname}")
            if (
                base == "_revinclude"
                and not iterate
                and sp.targets
                and self.rt not in sp.targets
                and target is None
            ):
                self.unsupported(f"{base}={value}: {src}:{pname} never refers to {self.rt}")
                return None
        return Include(src, pname, target, iterate)


def parse_search(
    resource_type: str,
    params: list[tuple[str, str]],
    *,
    strict: bool = False,
    blind: BlindIndex | None = None,
) -> SearchSpec:
    """Parse search query parameters for `resource_type` into a SearchSpec.

    Unknown parameters and modifiers are ignored with a warning (strict=False) or raise
    BadRequest (strict=True); malformed values always raise BadRequest. With `blind` (the
    store's blind index: `ResourceStore.blind`), PHI parameters are searched by tokens.
    """
    if resource_type not in SEARCH_PARAMS:
        raise BadRequest(f"Resource type '{resource_type}' is not searchable")
    return _Parser(resource_type, strict, blind).run(params)
