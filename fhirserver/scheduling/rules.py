"""Availability rules (Schedule) and visit durations (HealthcareService): parse and check.

The extension shapes are fixed by docs/scheduling.md. `parse_rules` turns a Schedule's
``availability-rule`` extensions into frozen `AvailabilityRule` values and reports every
malformed one; `rule_errors` adds the operating-hours check; `check_schedule` raises the
422 the write path answers with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from fhirserver.fhir.errors import Unprocessable
from fhirserver.scheduling import visit_types
from fhirserver.scheduling.hours import (
    DAY_CODES,
    chain_hours,
    format_minutes,
    location_chain,
    merge,
    parse_time,
    ref_id,
    subtract,
)

RULE_URL = "http://fhirserver.dev/StructureDefinition/availability-rule"
VISIT_DURATION_URL = "http://fhirserver.dev/StructureDefinition/visit-duration"

Json = dict[str, Any]
_INTEGERS = {  # sub-extension -> (field, minimum allowed value)
    "alignMinutes": ("align", 1),
    "bufferMinutes": ("buffer", 0),
    "minNoticeMinutes": ("min_notice", 0),
    "maxAdvanceDays": ("max_advance_days", 0),
}


@dataclass(frozen=True)
class RuleIssue:
    """One problem in a rule: the FHIRPath of the element and what is wrong."""

    expression: str
    diagnostics: str

    def as_issue(self) -> Json:
        """As an OperationOutcome issue."""
        return {
            "severity": "error",
            "code": Unprocessable.code,
            "diagnostics": self.diagnostics,
            "expression": [self.expression],
        }


@dataclass(frozen=True)
class VisitDuration:
    """Length (and optional start grid) of one visit type."""

    visit_type: str
    minutes: int
    align: int | None = None


@dataclass(frozen=True)
class AvailabilityRule:
    """One weekly availability block of a Schedule (local wall-clock times, minutes).

    ``start``/``end``/breaks are minutes from local midnight; ``effective_end`` is exclusive;
    empty ``visit_types`` means "the Schedule's serviceType, else every visit type".
    """

    index: int  # position in Schedule.extension
    days: frozenset[str]
    start: int
    end: int
    location_id: str | None = None
    effective_start: date | None = None
    effective_end: date | None = None
    visit_types: tuple[str, ...] = ()
    durations: tuple[VisitDuration, ...] = ()
    align: int | None = None
    buffer: int = 0
    breaks: tuple[tuple[int, int], ...] = ()
    min_notice: int = 0
    max_advance_days: int | None = None

    def applies_on(self, day: date) -> bool:
        """True when the rule recurs on the local date `day` (weekday and effective period)."""
        if DAY_CODES[day.weekday()] not in self.days:
            return False
        if self.effective_start is not None and day < self.effective_start:
            return False
        return self.effective_end is None or day < self.effective_end

    def open_minutes(self) -> list[tuple[int, int]]:
        """The block minus its breaks, as minutes of the local day."""
        return subtract([(self.start, self.end)], merge(self.breaks))

    def duration_of(self, code: str) -> VisitDuration | None:
        """The rule's own duration entry for a visit type, if any."""
        return next((d for d in self.durations if d.visit_type == code), None)


@dataclass
class _Draft:
    """Mutable fields collected while reading one rule."""

    days: set[str] = field(default_factory=set)
    start: int | None = None
    end: int | None = None
    values: dict[str, Any] = field(default_factory=dict)
    visit_types: list[str] = field(default_factory=list)
    durations: list[VisitDuration] = field(default_factory=list)
    breaks: list[tuple[int, int]] = field(default_factory=list)


def _date_part(value: Any) -> date | None:
    """The calendar date of a FHIR date/dateTime ("2026-11" -> 2026-11-01)."""
    if not isinstance(value, str) or len(value) < 4:
        return None
    text = value[:10]
    text += "-01-01"[len(text) - 4 :] if len(text) < 10 else ""
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _int(sub: Json, path: str, minimum: int, issues: list[RuleIssue]) -> int | None:
    value = sub.get("valueInteger")
    if not isinstance(value, int) or isinstance(value, bool):
        issues.append(RuleIssue(path, f"{sub.get('url')} needs valueInteger"))
        return None
    if value < minimum:
        issues.append(RuleIssue(path, f"{sub.get('url')} must be >= {minimum}, got {value}"))
        return None
    return value


def _time(sub: Json, path: str, issues: list[RuleIssue]) -> int | None:
    value = parse_time(sub.get("valueTime"))
    if value is None:
        issues.append(RuleIssue(path, f"{sub.get('url')} needs a valueTime like 09:00:00"))
    return value


def _visit_type(sub: Json, path: str, issues: list[RuleIssue]) -> str | None:
    coding = sub.get("valueCoding")
    code = visit_types.coding_code(coding)
    if code is None or not visit_types.is_known(code):
        shown = coding.get("code") if isinstance(coding, dict) else None
        issues.append(
            RuleIssue(
                path, f"unknown visit type {shown!r} (system {visit_types.VISIT_TYPE_SYSTEM})"
            )
        )
        return None
    return code


def parse_duration(ext: Json, path: str, issues: list[RuleIssue]) -> VisitDuration | None:
    """A ``duration`` (or ``visit-duration``) complex extension: visitType + minutes [+ align]."""
    code: str | None = None
    minutes: int | None = None
    align: int | None = None
    for j, sub in enumerate(ext.get("extension", [])):
        sub_path = f"{path}.extension[{j}]"
        url = sub.get("url") if isinstance(sub, dict) else None
        if url == "visitType":
            code = _visit_type(sub, sub_path, issues)
        elif url == "minutes":
            minutes = _int(sub, sub_path, 1, issues)
        elif url == "alignMinutes":
            align = _int(sub, sub_path, 1, issues)
        else:
            issues.append(RuleIssue(sub_path, f"unknown duration sub-extension {url!r}"))
    if code is None or minutes is None:
        issues.append(RuleIssue(path, "a duration needs visitType and minutes"))
        return None
    return VisitDuration(code, minutes, align)


def _read_sub(url: Any, sub: Json, path: str, d: _Draft, issues: list[RuleIssue]) -> None:
    """Read one sub-extension of an availability rule into the draft."""
    if url == "daysOfWeek":
        code = sub.get("valueCode")
        if code not in DAY_CODES:
            issues.append(RuleIssue(path, f"unknown day code {code!r} (use mon..sun)"))
        else:
            d.days.add(code)
    elif url in ("start", "end"):
        if url in d.values:
            issues.append(RuleIssue(path, f"{url} given twice"))
        d.values[url] = True
        setattr(d, url, _time(sub, path, issues))
    elif url == "location":
        loc = ref_id(sub.get("valueReference"))
        if loc is None:
            issues.append(RuleIssue(path, "location needs valueReference to a Location"))
        d.values["location_id"] = loc
    elif url == "effective":
        period = sub.get("valuePeriod")
        if not isinstance(period, dict):
            issues.append(RuleIssue(path, "effective needs valuePeriod"))
            return
        for part in ("start", "end"):
            raw = period.get(part)
            parsed = _date_part(raw)
            if raw is not None and parsed is None:
                issues.append(RuleIssue(path, f"effective {part} {raw!r} is not a FHIR date"))
            d.values[f"effective_{part}"] = parsed
        es, ee = d.values["effective_start"], d.values["effective_end"]
        if es is not None and ee is not None and es >= ee:
            issues.append(RuleIssue(path, "effective start must be before its (exclusive) end"))
    elif url == "visitType":
        code = _visit_type(sub, path, issues)
        if code is not None and code not in d.visit_types:
            d.visit_types.append(code)
    elif url == "duration":
        dur = parse_duration(sub, path, issues)
        if dur is not None:
            d.durations.append(dur)
    elif url == "break":
        _read_break(sub, path, d, issues)
    elif url in _INTEGERS:
        name, minimum = _INTEGERS[url]
        d.values[name] = _int(sub, path, minimum, issues)
    else:
        issues.append(RuleIssue(path, f"unknown availability-rule sub-extension {url!r}"))


def _read_break(sub: Json, path: str, d: _Draft, issues: list[RuleIssue]) -> None:
    times: dict[str, int | None] = {}
    for j, part in enumerate(sub.get("extension", [])):
        url = part.get("url") if isinstance(part, dict) else None
        if url in ("start", "end"):
            times[url] = _time(part, f"{path}.extension[{j}]", issues)
        else:
            issues.append(RuleIssue(f"{path}.extension[{j}]", f"unknown break part {url!r}"))
    bs, be = times.get("start"), times.get("end")
    if bs is None or be is None:
        issues.append(RuleIssue(path, "a break needs start and end times"))
    elif bs >= be:
        issues.append(RuleIssue(path, "break start must be before its end"))
    else:
        d.breaks.append((bs, be))


def parse_rule(ext: Json, index: int, issues: list[RuleIssue]) -> AvailabilityRule | None:
    """One availability-rule extension (at Schedule.extension[index]); None when malformed."""
    path = f"Schedule.extension[{index}]"
    before = len(issues)
    if any(str(k).startswith("value") for k in ext):
        issues.append(RuleIssue(path, "availability-rule is complex: no value[x]"))
    d = _Draft()
    for j, sub in enumerate(ext.get("extension", [])):
        url = sub.get("url") if isinstance(sub, dict) else None
        _read_sub(url, sub if isinstance(sub, dict) else {}, f"{path}.extension[{j}]", d, issues)
    if not d.days and not any(i.diagnostics.startswith("unknown day") for i in issues[before:]):
        issues.append(RuleIssue(path, "an availability rule needs at least one daysOfWeek"))
    if "start" not in d.values or "end" not in d.values:
        issues.append(RuleIssue(path, "an availability rule needs start and end times"))
    elif d.start is not None and d.end is not None:
        if d.start >= d.end:
            issues.append(
                RuleIssue(
                    path,
                    f"start {format_minutes(d.start)} must be before end {format_minutes(d.end)}",
                )
            )
        for bs, be in d.breaks:
            if bs < d.start or be > d.end:
                issues.append(
                    RuleIssue(
                        path,
                        f"break {format_minutes(bs)}-{format_minutes(be)} lies outside the "
                        f"block {format_minutes(d.start)}-{format_minutes(d.end)}",
                    )
                )
    if len(issues) > before or d.start is None or d.end is None:
        return None
    fields = {k: v for k, v in d.values.items() if k not in ("start", "end")}
    return AvailabilityRule(
        index=index,
        days=frozenset(d.days),
        start=d.start,
        end=d.end,
        visit_types=tuple(d.visit_types),
        durations=tuple(d.durations),
        breaks=tuple(sorted(d.breaks)),
        **fields,
    )


def parse_rules(schedule: Json) -> tuple[list[AvailabilityRule], list[RuleIssue]]:
    """The well-formed rules of a Schedule (in extension order) and the issues found.

    A malformed rule is left out of the list (the engine never guesses what it meant).
    """
    rules: list[AvailabilityRule] = []
    issues: list[RuleIssue] = []
    for i, ext in enumerate(schedule.get("extension", [])):
        if isinstance(ext, dict) and ext.get("url") == RULE_URL:
            rule = parse_rule(ext, i, issues)
            if rule is not None:
                rules.append(rule)
    return rules, issues


def default_location(schedule: Json) -> str | None:
    """The first Location actor of a Schedule (a rule without ``location`` is there)."""
    for actor in schedule.get("actor", []):
        loc = ref_id(actor)
        if loc is not None:
            return loc
    return None


def free_slot_location(schedule: Json, rules: Sequence[AvailabilityRule]) -> str | None:
    """Where a free Slot of the Schedule offers time (its zone and operating hours): the
    first Location actor, else the first rule's Location, else nowhere (UTC, always open)."""
    return default_location(schedule) or next((r.location_id for r in rules if r.location_id), None)


def hours_issues(
    rule: AvailabilityRule, schedule: Json, locations: Mapping[str, Json]
) -> list[RuleIssue]:
    """Where a rule lies outside the operating hours of its Location (or its ancestors).

    Example: a rule Mon-Sat 09:00-17:00 at a hospital open Mon-Fri 07:00-19:00 and Sat
    08:00-12:00 is refused for Saturday ("12:00-17:00 outside operating hours"). The rule's
    breaks are not offered, so a break may cover a closure (lunch). A Location chain without
    hoursOfOperation restricts nothing; an unknown Location is not checked.
    """
    loc = rule.location_id or default_location(schedule)
    chain = location_chain(loc, locations) if loc else []
    hours = chain_hours(chain)
    if hours is None:
        return []
    issues: list[RuleIssue] = []
    for code in sorted(rule.days, key=DAY_CODES.index):
        open_spans = hours.days[DAY_CODES.index(code)]
        outside = subtract(rule.open_minutes(), list(open_spans))
        if outside:
            shown = ", ".join(f"{format_minutes(s)}-{format_minutes(e)}" for s, e in outside)
            issues.append(
                RuleIssue(
                    f"Schedule.extension[{rule.index}]",
                    f"on {code} {shown} lies outside the operating hours of Location/{loc}",
                )
            )
    return issues


def rule_errors(schedule: Json, locations: Mapping[str, Json] | None = None) -> list[RuleIssue]:
    """Every problem with a Schedule's availability rules: malformed ones, and (when the
    rule's Location chain is in `locations`) time outside Location.hoursOfOperation."""
    rules, issues = parse_rules(schedule)
    for rule in rules:
        issues.extend(hours_issues(rule, schedule, locations or {}))
    return issues


def as_unprocessable(issues: list[RuleIssue]) -> Unprocessable:
    """One 422 carrying every issue (the first as the main issue)."""
    first, *rest = issues
    return Unprocessable(
        first.diagnostics,
        expression=[first.expression],
        issues=[i.as_issue() for i in rest],
    )


def check_schedule(schedule: Json, locations: Mapping[str, Json] | None = None) -> None:
    """Raise a 422 Unprocessable when the Schedule's rules are malformed or out of hours."""
    issues = rule_errors(schedule, locations)
    if issues:
        raise as_unprocessable(issues)


def service_durations(
    service: Json, issues: list[RuleIssue] | None = None
) -> dict[str, tuple[int, int | None]]:
    """A HealthcareService's ``visit-duration`` extensions: code -> (minutes, align)."""
    found = issues if issues is not None else []
    out: dict[str, tuple[int, int | None]] = {}
    for i, ext in enumerate(service.get("extension", [])):
        if isinstance(ext, dict) and ext.get("url") == VISIT_DURATION_URL:
            dur = parse_duration(ext, f"HealthcareService.extension[{i}]", found)
            if dur is not None:
                out.setdefault(dur.visit_type, (dur.minutes, dur.align))
    return out


def check_service(service: Json) -> None:
    """Raise a 422 Unprocessable when a HealthcareService's visit-duration is malformed."""
    issues: list[RuleIssue] = []
    service_durations(service, issues)
    if issues:
        raise as_unprocessable(issues)


def schedule_locations(schedule: Json) -> list[str]:
    """Location ids a Schedule offers time at: Location actors, then rule locations."""
    out = [
        str(a["reference"]).split("/")[1]
        for a in schedule.get("actor", [])
        if str(a.get("reference", "")).startswith("Location/")
    ]
    for ext in schedule.get("extension", []):
        for sub in ext.get("extension", []):
            if sub.get("url") == "location" and "valueReference" in sub:
                out.append(str(sub["valueReference"].get("reference", "")).split("/")[-1])
    return list(dict.fromkeys(out))
