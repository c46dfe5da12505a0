"""Demo Practitioners, PractitionerRoles and Patients."""

from __future__ import annotations

from fhirserver.demo.helpers import (
    HOSPITALS_BY_LOCATION,
    Resource,
    address,
    available_time,
    concept,
    language,
    location_ref,
    org_ref,
    ref,
    slug,
    specialty,
)
from fhirserver.demo.npi import NPI_SYSTEM, make_npi
from fhirserver.demo.tables import (
    HOSPITALS,
    MRN_SYSTEM,
    PARENT_ORG_ID,
    PATIENTS,
    PRACTITIONERS,
    SERVICES,
    PractitionerRow,
)
from fhirserver.scheduling.role_terms import ACCEPTING_NEW_URL, INSURANCE_URL

_DEGREE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0360"
_ROLE_SYSTEM = "http://terminology.hl7.org/CodeSystem/practitioner-role"
_ID_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0203"
_ROLE_START = "2018-07-01"
SERVICE_NAMES = {s.id: s.name for s in SERVICES}
_BOARDS = {
    "MA": "Massachusetts Board of Registration in Medicine",
    "CO": "Colorado Medical Board",
}


def practitioner_name(p: PractitionerRow) -> str:
    """Display name, e.g. "Dr. Ana Garcia"."""
    return f"{p.prefix} {p.given} {p.family}"


def practitioner_ref(p: PractitionerRow) -> dict[str, str]:
    """Reference to the Practitioner of ``p``."""
    return ref("Practitioner", p.id, practitioner_name(p))


def role_id(p: PractitionerRow) -> str:
    """Id of the (single) PractitionerRole of ``p``: "prr-ana-garcia"."""
    return f"prr-{slug(p.id)}"


def _work_contacts(p: PractitionerRow, index: int) -> list[dict[str, str]]:
    hospital = HOSPITALS_BY_LOCATION[p.hospital]
    phone = f"{hospital.phone[:-2]}{10 + index:02d}"
    email = f"{p.given}.{p.family}@riverside-health.example.org".lower()
    return [
        {"system": "phone", "value": phone, "use": "work"},
        {"system": "email", "value": email, "use": "work"},
    ]


def practitioners() -> list[Resource]:
    """One Practitioner per table row, with a computed (Luhn-valid) NPI."""
    out: list[Resource] = []
    for i, p in enumerate(PRACTITIONERS):
        state = HOSPITALS_BY_LOCATION[p.hospital].state
        out.append(
            {
                "resourceType": "Practitioner",
                "id": p.id,
                "identifier": [
                    {
                        "use": "official",
                        "type": concept(_ID_TYPE_SYSTEM, "NPI", "National provider identifier"),
                        "system": NPI_SYSTEM,
                        "value": make_npi(p.npi_base),
                    }
                ],
                "active": True,
                "name": [
                    {
                        "use": "official",
                        "text": f"{practitioner_name(p)}, {p.degree[0]}",
                        "family": p.family,
                        "given": [p.given],
                        "prefix": [p.prefix],
                        "suffix": [p.degree[0]],
                    }
                ],
                "telecom": _work_contacts(p, i),
                "gender": p.gender,
                "birthDate": p.birth_date,
                "qualification": [
                    {
                        "code": concept(_DEGREE_SYSTEM, p.degree[0], p.degree[1]),
                        "issuer": {"display": _BOARDS[state]},
                    }
                ],
                "communication": [language(code) for code in p.languages],
            }
        )
    return out


def practitioner_roles() -> list[Resource]:
    """One PractitionerRole per practitioner: organization, hospital + room, services, hours."""
    out: list[Resource] = []
    for i, p in enumerate(PRACTITIONERS):
        hospital = HOSPITALS_BY_LOCATION[p.hospital]
        new_patients = (
            "Accepting new patients."
            if p.accepting_new
            else "Not accepting new patients; established patients and referrals only."
        )
        out.append(
            {
                "resourceType": "PractitionerRole",
                "id": role_id(p),
                "active": True,
                "period": {"start": _ROLE_START},
                "practitioner": practitioner_ref(p),
                "organization": org_ref(hospital.org_id),
                "code": [concept(_ROLE_SYSTEM, p.role[0], p.role[1])],
                "specialty": [specialty(p.specialty)],
                "location": [location_ref(p.hospital), location_ref(p.room)],
                "healthcareService": [
                    ref("HealthcareService", s, SERVICE_NAMES[s]) for s in p.services
                ],
                "telecom": _work_contacts(p, i)[:1],
                "availableTime": available_time(p.clinic),
                "availabilityExceptions": f"{new_patients} Closed on public holidays.",
                "extension": [
                    {"url": ACCEPTING_NEW_URL, "valueBoolean": p.accepting_new},
                    *({"url": INSURANCE_URL, "valueIdentifier": _plan(v)} for v in _plans(i)),
                ],
            }
        )
    return out


PLAN_SYSTEM = "http://fhirserver.dev/sid/insurance-plan"
DEMO_PLANS = ("RIVERSIDE-PPO", "RIVERSIDE-HMO", "MEDICARE-A-B", "MEDICAID")


def _plan(value: str) -> dict[str, str]:
    return {"system": PLAN_SYSTEM, "value": value}


def _plans(i: int) -> tuple[str, ...]:
    """Plans the i-th demo role accepts: everyone takes the PPO and Medicare; HMO and
    Medicaid alternate, so an insurance filter narrows the list."""
    return ("RIVERSIDE-PPO", "MEDICARE-A-B", DEMO_PLANS[1 + 2 * (i % 2)])


def patients() -> list[Resource]:
    """The demo patients, with MRNs, a preferred language and (some) a general practitioner."""
    orgs_by_city = {h.city: h.org_id for h in HOSPITALS}
    by_id = {p.id: p for p in PRACTITIONERS}
    out: list[Resource] = []
    for pt in PATIENTS:
        resource: Resource = {
            "resourceType": "Patient",
            "id": pt.id,
            "identifier": [
                {
                    "use": "usual",
                    "type": concept(_ID_TYPE_SYSTEM, "MR", "Medical record number"),
                    "system": MRN_SYSTEM,
                    "value": pt.mrn,
                    "assigner": org_ref(PARENT_ORG_ID),
                }
            ],
            "active": True,
            "name": [{"use": "official", "family": pt.family, "given": [pt.given]}],
            "telecom": [
                {"system": "phone", "value": pt.phone, "use": "mobile", "rank": 1},
                {"system": "email", "value": pt.email, "use": "home"},
            ],
            "gender": pt.gender,
            "birthDate": pt.birth_date,
            "address": [address(pt.line, pt.city, pt.state, pt.postal_code, "home")],
            "communication": [{"language": language(pt.language), "preferred": True}],
            "managingOrganization": org_ref(orgs_by_city[pt.city]),
        }
        if pt.gp:
            resource["generalPractitioner"] = [practitioner_ref(by_id[pt.gp])]
        out.append(resource)
    return out
