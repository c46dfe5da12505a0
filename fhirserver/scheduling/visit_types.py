"""The visit-type catalogue: terminology/CodeSystem-visit-type.json as typed values.

Each concept carries its default length as the integer property ``duration-minutes``
(NEW_PATIENT 60, FOLLOW_UP 30, ...). Rules and HealthcareServices may override the length;
this module only knows the defaults.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from types import MappingProxyType
from typing import Any

from fhirserver.paths import project_dir

VISIT_TYPE_SYSTEM = "http://fhirserver.dev/CodeSystem/visit-type"
DURATION_PROPERTY = "duration-minutes"
CODE_SYSTEM_FILE = "CodeSystem-visit-type.json"


@dataclass(frozen=True)
class VisitType:
    """One visit type: code, display and default length in minutes."""

    code: str
    display: str
    minutes: int


def _minutes(concept: dict[str, Any]) -> int:
    for prop in concept.get("property", []):
        if prop.get("code") == DURATION_PROPERTY and isinstance(prop.get("valueInteger"), int):
            return int(prop["valueInteger"])
    raise ValueError(f"visit type {concept.get('code')} has no {DURATION_PROPERTY} property")


@cache
def catalogue() -> Mapping[str, VisitType]:
    """Every visit type by code, in CodeSystem order (read once)."""
    path = project_dir("terminology") / CODE_SYSTEM_FILE
    doc = json.loads(path.read_text(encoding="utf-8"))
    out = {
        c["code"]: VisitType(c["code"], c.get("display", c["code"]), _minutes(c))
        for c in doc.get("concept", [])
    }
    return MappingProxyType(out)


def codes() -> tuple[str, ...]:
    """All visit-type codes, in CodeSystem order."""
    return tuple(catalogue())


def is_known(code: str) -> bool:
    """True when `code` is a visit type of the CodeSystem."""
    return code in catalogue()


def default_minutes(code: str) -> int | None:
    """The CodeSystem default length of `code` (None for an unknown code)."""
    vt = catalogue().get(code)
    return vt.minutes if vt else None


def coding_code(coding: Any) -> str | None:
    """The visit-type code of a Coding (our system, or no system and a known code)."""
    if not isinstance(coding, dict) or not isinstance(coding.get("code"), str):
        return None
    system = coding.get("system")
    code: str = coding["code"]
    if system == VISIT_TYPE_SYSTEM or (system is None and is_known(code)):
        return code
    return None


def concept_codes(concepts: Iterable[Any]) -> list[str]:
    """Visit-type codes named by CodeableConcepts (e.g. Schedule.serviceType), in order."""
    out: list[str] = []
    for cc in concepts:
        if not isinstance(cc, dict):
            continue
        for coding in cc.get("coding", []):
            code = coding_code(coding)
            if code and code not in out:
                out.append(code)
    return out
