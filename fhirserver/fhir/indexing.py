"""Extraction of search index values from a resource (docs/search-index.md is the contract).

`extract_index(resource)` returns ``(idx, srt)``: ``idx`` maps a search parameter name to
its list of normalised values (key absent = no value) and ``srt`` maps every sortable
parameter of the type to one sort-key string ("" when missing). It runs on every write,
so the paths of every type are compiled once, at import, into small walkers.

Also here, shared with `fhirserver.fhir.search`: string normalisation (`normalize`),
FHIR date parsing into ``[lo, hi)`` ranges (`parse_date`) and sort-key formatting.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import Any

from fhirserver.fhir.searchparams import IMPLICIT_SYSTEMS, SEARCH_PARAMS, SearchParam

# Open ends of ranges: a Period without start/end. MAX is also the "no end" hi value.
MIN_DT = datetime(1, 1, 1, tzinfo=UTC)
MAX_DT = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
MIN_DAY = "0001-01-01"
MAX_DAY = "9999-12-31"
_MS = timedelta(milliseconds=1)
_US = timedelta(microseconds=1)


# --------------------------------------------------------------------------- strings


def normalize(value: str) -> str:
    """NFKD, accents (combining marks) stripped, casefolded, whitespace collapsed."""
    if value.isascii():
        return " ".join(value.lower().split())
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    folded = stripped.casefold()
    if not folded.isascii():
        # casefold can produce new decomposable characters; strip those marks too
        folded = "".join(
            ch for ch in unicodedata.normalize("NFKD", folded) if not unicodedata.combining(ch)
        )
    return " ".join(folded.split())


# --------------------------------------------------------------------------- dates

_DATE_RE = re.compile(
    r"(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?"
)


@dataclass(frozen=True, slots=True)
class DateValue:
    """A FHIR date/dateTime/instant as the range ``[lo, hi)`` its precision implies.

    ``lo``/``hi`` are exact (microsecond) UTC instants; ``tz`` is the value's own offset
    (UTC when it had none); ``has_time`` is False for YYYY, YYYY-MM and YYYY-MM-DD.
    """

    lo: datetime
    hi: datetime
    tz: tzinfo
    has_time: bool

    @property
    def day_lo(self) -> str:
        """The calendar date of ``lo`` in the value's own offset."""
        return _day(self.lo, self.tz)

    @property
    def day_hi(self) -> str:
        """The calendar date of ``hi`` minus 1 microsecond in the value's own offset."""
        return _day(self.hi - _US if self.hi < MAX_DT else MAX_DT, self.tz)


def _day(dt: datetime, tz: tzinfo) -> str:
    if dt <= MIN_DT:
        return MIN_DAY
    if dt >= MAX_DT:
        return MAX_DAY
    try:
        d = dt.astimezone(tz).date()
    except OverflowError:
        return MIN_DAY if dt.year < 5000 else MAX_DAY
    return _fmt_date(d)


def _fmt_date(d: date) -> str:
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}"


def _add_months(y: int, m: int, n: int) -> tuple[int, int]:
    m0 = y * 12 + (m - 1) + n
    return m0 // 12, m0 % 12 + 1


def parse_date(value: str) -> DateValue | None:
    """Parse a FHIR date, dateTime or instant; None if malformed.

    Accepts YYYY, YYYY-MM, YYYY-MM-DD and YYYY-MM-DDThh:mm[:ss[.fff...]][Z|+hh:mm|-hh:mm].
    A value without an offset is UTC. A space in place of ``+`` in the offset (an unencoded
    ``+`` in a query string) is accepted.
    """
    value = value.strip()
    if len(value) > 10 and value[-6] == " ":
        value = value[:-6] + "+" + value[-5:]
    m = _DATE_RE.fullmatch(value)
    if m is None:
        return None
    g = m.groupdict()
    y = int(g["y"])
    tz: tzinfo = UTC
    if g["tz"] and g["tz"] != "Z":
        sign = 1 if g["tz"][0] == "+" else -1
        hh, mm = int(g["tz"][1:3]), int(g["tz"][4:6])
        if hh > 14 or mm > 59:
            return None
        tz = timezone(sign * timedelta(hours=hh, minutes=mm))
    try:
        if g["H"] is None:
            if g["m"] is None:
                lo_d = datetime(y, 1, 1, tzinfo=UTC)
                hi_d = datetime(y + 1, 1, 1, tzinfo=UTC) if y < 9999 else MAX_DT
            elif g["d"] is None:
                mo = int(g["m"])
                lo_d = datetime(y, mo, 1, tzinfo=UTC)
                ny, nm = _add_months(y, mo, 1)
                hi_d = datetime(ny, nm, 1, tzinfo=UTC) if ny <= 9999 else MAX_DT
            else:
                lo_d = datetime(y, int(g["m"]), int(g["d"]), tzinfo=UTC)
                hi_d = lo_d + timedelta(days=1) if lo_d.date() < date.max else MAX_DT
            return DateValue(lo_d, hi_d, UTC, False)
        sec = g["S"]
        frac = g["f"]
        if sec is None:
            step = timedelta(minutes=1)
            s, us = 0, 0
        else:
            s = min(int(sec), 59)  # leap second 60 -> 59
            if frac is None:
                step = timedelta(seconds=1)
                us = 0
            else:
                digits = frac[:6]
                us = int(digits.ljust(6, "0"))
                step = timedelta(microseconds=10 ** (6 - len(digits)))
        local = datetime(y, int(g["m"]), int(g["d"]), int(g["H"]), int(g["M"]), s, us, tzinfo=tz)
        lo = local.astimezone(UTC)
        try:
            hi = lo + step
        except OverflowError:
            hi = MAX_DT
        return DateValue(lo, min(hi, MAX_DT), tz, True)
    except (ValueError, OverflowError):
        return None


def floor_ms(dt: datetime) -> datetime:
    """Round down to BSON's millisecond precision."""
    return dt.replace(microsecond=dt.microsecond - dt.microsecond % 1000)


def ceil_ms(dt: datetime) -> datetime:
    """Round up to BSON's millisecond precision (MAX_DT stays MAX_DT)."""
    rem = dt.microsecond % 1000
    if rem == 0 or dt >= MAX_DT:
        return dt
    try:
        return dt + timedelta(microseconds=1000 - rem)
    except OverflowError:
        return MAX_DT


def format_sort_instant(dt: datetime) -> str:
    """`%Y-%m-%dT%H:%M:%S.%fZ` in UTC, with a 4-digit year even before 1000."""
    u = dt.astimezone(UTC) if dt > MIN_DT else MIN_DT
    return (
        f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:"
        f"{u.second:02d}.{u.microsecond:06d}Z"
    )


def format_sort_number(x: float) -> str:
    """A string that sorts like the number (negative numbers first, then ascending)."""
    if not math.isfinite(x):
        return "2" if x > 0 else "0"
    if x >= 0:
        return "1" + f"{x:032.9f}"
    return "0" + f"{1e22 + x:032.9f}"


def _date_entry(lo: datetime, hi: datetime, lo_tz: tzinfo, hi_tz: tzinfo) -> dict[str, Any]:
    dl = _day(lo, lo_tz)
    # max(): with different offsets on start and end the local days could invert
    dh = max(dl, _day(hi - _US if hi < MAX_DT else MAX_DT, hi_tz))
    return {
        "lo": floor_ms(lo),
        "hi": hi if hi >= MAX_DT else ceil_ms(hi),
        "dl": dl,
        "dh": dh,
    }


def _period_entry(start: Any, end: Any, *, open_end: bool) -> dict[str, Any] | None:
    """A range from start/end values: a Period (open_end) or Appointment.start..end."""
    sv = parse_date(start) if isinstance(start, str) else None
    ev = parse_date(end) if isinstance(end, str) else None
    if sv is None and ev is None:
        return None
    if sv is not None:
        lo, lo_tz = sv.lo, sv.tz
    elif open_end:
        lo, lo_tz = MIN_DT, UTC
    else:
        assert ev is not None
        lo, lo_tz = ev.lo, ev.tz
    if ev is not None:
        # An end with a time of day is the exclusive end instant (10:00-11:00 does not
        # touch 11:00); a date-only end includes its whole day/month/year.
        hi, hi_tz = (ev.lo if ev.has_time else ev.hi), ev.tz
        if sv is not None and hi < sv.hi:  # end before start: keep the start's own range
            hi, hi_tz = sv.hi, sv.tz
    elif open_end:
        hi, hi_tz = MAX_DT, UTC
    else:
        assert sv is not None
        hi, hi_tz = sv.hi, sv.tz
    return _date_entry(lo, hi, lo_tz, hi_tz)


# --------------------------------------------------------------------------- walkers

# A step: (element name, is_choice, filter key, filter value)
Step = tuple[str, bool, str | None, str | None]
_STEP_RE = re.compile(r"(?P<name>[A-Za-z]+)(?P<choice>\[x\])?(?:\[(?P<k>\w+)=(?P<v>[^\]]+)\])?")
_RANGE_RE = re.compile(r"(?P<base>.+)\.(?P<start>\w+)\.\.(?P<end>\w+)")


def _compile_steps(path: str) -> tuple[Step, ...]:
    parts = path.split(".")[1:]
    steps: list[Step] = []
    for part in parts:
        m = _STEP_RE.fullmatch(part)
        if m is None:
            raise ValueError(f"bad search path {path!r}")
        steps.append((m["name"], m["choice"] is not None, m["k"], m["v"]))
    return tuple(steps)


def _step(nodes: list[Any], step: Step) -> list[Any]:
    name, choice, fk, fv = step
    out: list[Any] = []
    for node in nodes:
        if not isinstance(node, dict):
            continue
        if choice:
            vals = [
                v
                for k, v in node.items()
                if k.startswith(name) and len(k) > len(name) and k[len(name)].isupper()
            ]
        else:
            v = node.get(name)
            if v is None:
                continue
            vals = [v]
        for v in vals:
            if isinstance(v, list):
                out.extend(x for x in v if x is not None)
            else:
                out.append(v)
    if fk is not None:
        out = [x for x in out if isinstance(x, dict) and x.get(fk) == fv]
    return out


def _walk(
    resource: dict[str, Any], steps: tuple[Step, ...], memo: dict[Any, list[Any]]
) -> list[Any]:
    nodes: list[Any] = [resource]
    for i in range(len(steps)):
        key = steps[: i + 1]
        cached = memo.get(key)
        if cached is None:
            cached = _step(nodes, steps[i])
            memo[key] = cached
        nodes = cached
        if not nodes:
            return nodes
    return nodes


# --------------------------------------------------------------------------- extractors

Extractor = Callable[[list[Any]], list[Any]]


def _token_values(nodes: list[Any], kind: str, implicit_system: str | None) -> list[Any]:
    out: list[Any] = []
    for n in nodes:
        if isinstance(n, bool):
            out.append({"s": None, "c": "true" if n else "false"})
        elif isinstance(n, str):
            out.append({"s": implicit_system, "c": n})
        elif isinstance(n, dict):
            if kind == "identifier":
                _identifier(n, out)
            elif kind == "contactpoint":
                if isinstance(n.get("value"), str):
                    out.append({"s": n.get("use"), "c": n["value"]})
            elif "coding" in n or ("text" in n and "code" not in n and "value" not in n):
                for coding in n.get("coding") or ():
                    if isinstance(coding, dict):
                        _coding(coding, out)
                text = n.get("text")
                if isinstance(text, str) and text.strip():
                    out.append({"s": None, "c": None, "t": normalize(text)})
            elif "code" in n or "system" in n:
                _coding(n, out)
            elif "value" in n:
                _identifier(n, out)
    return out


def _coding(c: dict[str, Any], out: list[Any]) -> None:
    code = c.get("code")
    display = c.get("display")
    if not isinstance(code, str) and not isinstance(display, str):
        return
    entry: dict[str, Any] = {"s": c.get("system"), "c": code if isinstance(code, str) else None}
    if isinstance(display, str) and display.strip():
        entry["t"] = normalize(display)
    out.append(entry)


def _identifier(i: dict[str, Any], out: list[Any]) -> None:
    value = i.get("value")
    if not isinstance(value, str):
        return
    entry: dict[str, Any] = {"s": i.get("system"), "c": value}
    itype = i.get("type")
    if isinstance(itype, dict) and isinstance(itype.get("text"), str):
        entry["t"] = normalize(itype["text"])
    out.append(entry)


_STRING_PARTS = (
    "family",
    "given",
    "prefix",
    "suffix",
    "line",
    "city",
    "district",
    "state",
    "postalCode",
    "country",
    "text",
)


def _string_values(nodes: list[Any]) -> list[Any]:
    raw: list[str] = []
    for n in nodes:
        if isinstance(n, str):
            raw.append(n)
        elif isinstance(n, dict):
            for key in _STRING_PARTS:
                v = n.get(key)
                if isinstance(v, str):
                    raw.append(v)
                elif isinstance(v, list):
                    raw.extend(x for x in v if isinstance(x, str))
    return [{"n": normalize(s), "e": s} for s in raw if s.strip()]


_REF_TYPE_RE = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}$")
_HISTORY_RE = re.compile(r"/_history/[^/]*$")


def split_reference(ref: str) -> tuple[str, str | None]:
    """(reference without /_history/n, its resource type if it ends in Type/id)."""
    ref = _HISTORY_RE.sub("", ref.strip())
    m = _REF_TYPE_RE.search(ref)
    return ref, (m.group(1) if m else None)


def _reference_values(nodes: list[Any], targets: frozenset[str]) -> list[Any]:
    out: list[Any] = []
    for n in nodes:
        if not isinstance(n, dict):
            continue
        ref = n.get("reference")
        if not isinstance(ref, str) or not ref or ref.startswith("#"):
            continue
        ref, rtype = split_reference(ref)
        declared = n.get("type")
        if isinstance(declared, str) and "/" not in declared:
            rtype = rtype or declared
        if targets and rtype not in targets:
            continue
        out.append(ref)
    return out


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    try:
        return float(v) if isinstance(v, str) else None
    except ValueError:
        return None


def _number_values(nodes: list[Any]) -> list[Any]:
    return [x for x in (_number(n) for n in nodes) if x is not None]


def _quantity_values(nodes: list[Any]) -> list[Any]:
    out: list[Any] = []
    for n in nodes:
        if isinstance(n, dict):
            v = _number(n.get("value"))
            if v is not None:
                out.append({"v": v, "s": n.get("system"), "c": n.get("code") or n.get("unit")})
    return out


def _uri_values(nodes: list[Any]) -> list[Any]:
    return [n for n in nodes if isinstance(n, str) and n]


def _date_values(nodes: list[Any]) -> list[Any]:
    out: list[Any] = []
    for n in nodes:
        if isinstance(n, str):
            dv = parse_date(n)
            if dv is not None:
                out.append(_date_entry(dv.lo, dv.hi, dv.tz, dv.tz))
        elif isinstance(n, dict) and ("start" in n or "end" in n):
            e = _period_entry(n.get("start"), n.get("end"), open_end=True)
            if e is not None:
                out.append(e)
    return out


def _near_values(nodes: list[Any]) -> list[Any]:
    out: list[Any] = []
    for n in nodes:
        if isinstance(n, dict):
            lat, lng = _number(n.get("latitude")), _number(n.get("longitude"))
            if lat is not None and lng is not None:
                out.append({"lat": lat, "lng": lng})
    return out


# --------------------------------------------------------------------------- compile


@dataclass(frozen=True, slots=True)
class _CompiledPath:
    steps: tuple[Step, ...]
    extract: Extractor
    range_ends: tuple[str, str] | None = None  # start..end range: names under `steps`


@dataclass(frozen=True, slots=True)
class _CompiledParam:
    name: str
    type: str
    paths: tuple[_CompiledPath, ...]


def _extractor(sp: SearchParam, path: str) -> Extractor:
    if sp.type == "token":
        tail = path.rsplit(".", 1)[-1].split("[", 1)[0]
        kind = {"identifier": "identifier", "telecom": "contactpoint"}.get(tail, "")
        implicit = IMPLICIT_SYSTEMS.get(path)
        return lambda nodes: _token_values(nodes, kind, implicit)
    if sp.type == "string":
        return _string_values
    if sp.type == "reference":
        targets = frozenset(sp.targets)
        return lambda nodes: _reference_values(nodes, targets)
    if sp.type == "date":
        return _date_values
    if sp.type == "number":
        return _number_values
    if sp.type == "quantity":
        return _quantity_values
    if sp.type == "uri":
        return _uri_values
    if sp.type == "special":
        return _near_values
    raise ValueError(f"unknown search param type {sp.type}")


def _compile(sp: SearchParam) -> _CompiledParam:
    paths: list[_CompiledPath] = []
    for path in sp.paths:
        rm = _RANGE_RE.fullmatch(path)
        if rm is not None:
            if sp.type != "date":
                raise ValueError(f"range path on non-date param {sp.name}")
            paths.append(
                _CompiledPath(_compile_steps(rm["base"]), _date_values, (rm["start"], rm["end"]))
            )
        else:
            paths.append(_CompiledPath(_compile_steps(path), _extractor(sp, path)))
    return _CompiledParam(sp.name, sp.type, tuple(paths))


_COMPILED: dict[str, tuple[_CompiledParam, ...]] = {
    rtype: tuple(_compile(sp) for sp in params.values()) for rtype, params in SEARCH_PARAMS.items()
}


def _dedupe(values: Iterable[Any]) -> list[Any]:
    seen: set[Any] = set()
    out: list[Any] = []
    for v in values:
        key = tuple(sorted(v.items(), key=lambda kv: kv[0])) if isinstance(v, dict) else v
        if key in seen:
            continue
        seen.add(key)
        out.append(v)
    return out


def _sort_key(ptype: str, values: list[Any]) -> str | None:
    if ptype == "special":
        return None
    if not values:
        return ""
    if ptype == "date":
        return format_sort_instant(min(v["lo"] for v in values))
    if ptype == "string":
        return str(values[0]["n"])
    if ptype == "token":
        for v in values:
            if v.get("c") is not None:
                return str(v["c"])
        return str(values[0].get("t") or "")
    if ptype == "number":
        return format_sort_number(min(values))
    if ptype == "quantity":
        return format_sort_number(min(v["v"] for v in values))
    return str(values[0])


def extract_index(resource: dict[str, Any]) -> tuple[dict[str, list[Any]], dict[str, str]]:
    """Extract (idx, srt) for `resource` as docs/search-index.md describes."""
    params = _COMPILED.get(str(resource.get("resourceType")), ())
    memo: dict[Any, list[Any]] = {}
    idx: dict[str, list[Any]] = {}
    srt: dict[str, str] = {}
    for cp in params:
        values: list[Any] = []
        for path in cp.paths:
            nodes = _walk(resource, path.steps, memo)
            if not nodes:
                continue
            if path.range_ends is not None:
                start_name, end_name = path.range_ends
                for node in nodes:
                    if isinstance(node, dict):
                        e = _period_entry(node.get(start_name), node.get(end_name), open_end=False)
                        if e is not None:
                            values.append(e)
            else:
                values.extend(path.extract(nodes))
        if values:
            if len(values) > 1:
                values = _dedupe(values)
            idx[cp.name] = values
        key = _sort_key(cp.type, values)
        if key is not None:
            srt[cp.name] = key
    return idx, srt
