"""What a PractitionerRole says about who it takes: new patients and insurance plans.

Two extensions of ours (profiles/): `accepting-new-patients` (valueBoolean; absent means
accepting) and `accepted-insurance` (valueIdentifier of a plan, 0..*; a role that lists none
matches no coverage filter: "takes my plan" must be a fact, not a guess).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Json = dict[str, Any]
ACCEPTING_NEW_URL = "http://fhirserver.dev/StructureDefinition/accepting-new-patients"
INSURANCE_URL = "http://fhirserver.dev/StructureDefinition/accepted-insurance"


def accepts_new_patients(role: Json) -> bool:
    """False only when the role says so with the accepting-new-patients extension."""
    for ext in role.get("extension", []):
        if ext.get("url") == ACCEPTING_NEW_URL and ext.get("valueBoolean") is False:
            return False
    return True


def accepted_plans(role: Json) -> set[str]:
    """The plans a role takes, as "system|value" and bare "value" tokens."""
    out: set[str] = set()
    for ext in role.get("extension", []):
        ident = ext.get("valueIdentifier") if ext.get("url") == INSURANCE_URL else None
        if ident and ident.get("value"):
            out.add(str(ident["value"]))
            if ident.get("system"):
                out.add(f"{ident['system']}|{ident['value']}")
    return out


def takes_any(role: Json, plans: Iterable[str]) -> bool:
    """Whether the role accepts one of `plans` ("system|value" or "value" tokens)."""
    return bool(accepted_plans(role) & set(plans))
