"""The access policy over real HTTP with real tokens: each role sees exactly its own.

One small world (two organizations, two practitioners, four patients, three appointments)
and one token per role, got through the real flows (authorization code for users,
client_credentials for backend services). Every check is an HTTP request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest

from tests.auth.conftest import AuthServer
from tests.auth.helpers import (
    CONFIDENTIAL,
    PASSWORD,
    SEEDER,
    SEEDER_SECRET,
    AuthRequestParams,
    authorize,
    client_token_sync,
    exchange,
    user_token,
)

FHIR = {"Content-Type": "application/fhir+json"}
PATIENTS = ("acc-pat-1", "acc-pat-2", "acc-pat-3", "acc-pat-4")
APPTS = ("acc-appt-1", "acc-appt-2", "acc-appt-3")


def _appt(aid: str, patient: str, prac: str, day: int, status: str = "booked") -> dict[str, Any]:
    return {
        "resourceType": "Appointment", "id": aid, "status": status,
        "start": f"2031-03-{day:02d}T10:00:00Z", "end": f"2031-03-{day:02d}T10:30:00Z",
        **({"cancelationReason": {"text": "test"}} if status == "cancelled" else {}),
        "participant": [
            {"actor": {"reference": f"Patient/{patient}"}, "status": "accepted"},
            {"actor": {"reference": f"Practitioner/{prac}"}, "status": "accepted"},
        ],
    }


WORLD: list[dict[str, Any]] = [
    {"resourceType": "Organization", "id": "acc-org-1", "name": "Org One"},
    {"resourceType": "Organization", "id": "acc-org-2", "name": "Org Two"},
    {"resourceType": "Practitioner", "id": "acc-pr-1", "name": [{"family": "Doc One"}]},
    {"resourceType": "Practitioner", "id": "acc-pr-2", "name": [{"family": "Doc Two"}]},
    {"resourceType": "PractitionerRole", "id": "acc-role-1",
     "practitioner": {"reference": "Practitioner/acc-pr-1"},
     "organization": {"reference": "Organization/acc-org-1"}},
    {"resourceType": "PractitionerRole", "id": "acc-role-2",
     "practitioner": {"reference": "Practitioner/acc-pr-2"},
     "organization": {"reference": "Organization/acc-org-2"}},
    {"resourceType": "Location", "id": "acc-loc-1", "name": "Clinic One",
     "managingOrganization": {"reference": "Organization/acc-org-1"}},
    {"resourceType": "Schedule", "id": "acc-sch-1",
     "actor": [{"reference": "Practitioner/acc-pr-1"}]},
    {"resourceType": "Schedule", "id": "acc-sch-2",
     "actor": [{"reference": "Practitioner/acc-pr-2"}]},
    {"resourceType": "Patient", "id": "acc-pat-1", "name": [{"family": "Accone"}]},
    {"resourceType": "Patient", "id": "acc-pat-2", "name": [{"family": "Zzother"}]},
    {"resourceType": "Patient", "id": "acc-pat-3", "name": [{"family": "Orgmember"}],
     "managingOrganization": {"reference": "Organization/acc-org-1"}},
    {"resourceType": "Patient", "id": "acc-pat-4", "name": [{"family": "Gpcared"}],
     "generalPractitioner": [{"reference": "Practitioner/acc-pr-1"}],
     "link": [{"other": {"reference": "Patient/acc-pat-2"}, "type": "seealso"}]},
    _appt("acc-appt-1", "acc-pat-1", "acc-pr-1", 3),
    _appt("acc-appt-2", "acc-pat-2", "acc-pr-2", 4),
    _appt("acc-appt-3", "acc-pat-1", "acc-pr-2", 5, status="cancelled"),
]


@dataclass
class Tokens:
    """One access token per role."""

    patient: str
    practitioner: str
    staff: str
    auditor: str
    system: str
    narrow_system: str  # system/Appointment.rs system/Slot.rs system/Patient.r
    cancelled_only: str  # patient/Appointment.rs?status=cancelled


@pytest.fixture(scope="module")
async def tokens(auth_server: AuthServer) -> Tokens:
    """Seed the world, create the users, and log each of them in."""
    srv = auth_server
    seed = client_token_sync(srv.auth_base, SEEDER, SEEDER_SECRET, "system/*.cruds")
    async with httpx.AsyncClient(base_url=srv.fhir_base, timeout=30,
                                 headers={"Authorization": f"Bearer {seed}"}) as c:
        for res in WORLD:
            r = await c.put(f"/{res['resourceType']}/{res['id']}", json=res, headers=FHIR)
            assert r.status_code in (200, 201), r.text
    auth = srv.auth
    auth.add_user("acc-pat", "patient", PASSWORD, "Patient/acc-pat-1", "Pat One")
    auth.add_user("acc-doc", "practitioner", PASSWORD, "Practitioner/acc-pr-1", "Doc One")
    auth.add_user("acc-clerk", "staff", PASSWORD, None, "Clerk", "Organization/acc-org-1")
    auth.add_user("acc-auditor", "auditor", PASSWORD, None, "Auditor")
    scope = "openid fhirUser user/*.cruds"

    async def login(username: str, scope: str = scope) -> str:
        async with httpx.AsyncClient(timeout=30, follow_redirects=False) as http:
            return await user_token(http, srv.auth_base, srv.fhir_base, username, scope)

    return Tokens(
        patient=await login("acc-pat", "openid fhirUser launch/patient patient/*.cruds"),
        practitioner=await login("acc-doc"),
        staff=await login("acc-clerk"),
        auditor=await login("acc-auditor"),
        system=seed,
        narrow_system=client_token_sync(srv.auth_base, SEEDER, SEEDER_SECRET,
                                        "system/Appointment.rs system/Slot.rs system/Patient.r"),
        cancelled_only=await login(
            "acc-pat", "launch/patient patient/Appointment.rs?status=cancelled"),
    )


async def _get(srv: AuthServer, token: str | None, path: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=srv.fhir_base, timeout=30) as c:
        return await c.get(path, headers=headers)


async def _ids(srv: AuthServer, token: str, path: str) -> set[str]:
    r = await _get(srv, token, path)
    assert r.status_code == 200, r.text
    return {e["resource"]["id"] for e in r.json().get("entry", [])
            if e.get("search", {}).get("mode") != "outcome"}


SEARCH_PATIENTS = "/Patient?_id=" + ",".join(PATIENTS)
SEARCH_APPTS = "/Appointment?_id=" + ",".join(APPTS)


@pytest.mark.parametrize(("role", "patients", "appts"), [
    ("patient", {"acc-pat-1"}, {"acc-appt-1", "acc-appt-3"}),
    ("practitioner", {"acc-pat-1", "acc-pat-4"}, {"acc-appt-1"}),
    ("staff", {"acc-pat-1", "acc-pat-3", "acc-pat-4"}, {"acc-appt-1"}),
    ("system", set(PATIENTS), set(APPTS)),
])
async def test_each_role_searches_exactly_its_own(
    auth_server: AuthServer, tokens: Tokens, role: str, patients: set[str], appts: set[str]
) -> None:
    token = getattr(tokens, role)
    assert await _ids(auth_server, token, SEARCH_PATIENTS) == patients
    assert await _ids(auth_server, token, SEARCH_APPTS) == appts
    # Reads agree with searches: the others' are 404, never 403 (non-disclosure).
    for pid in PATIENTS:
        r = await _get(auth_server, token, f"/Patient/{pid}")
        assert r.status_code == (200 if pid in patients else 404), (pid, r.text)
    for aid in APPTS:
        r = await _get(auth_server, token, f"/Appointment/{aid}")
        assert r.status_code == (200 if aid in appts else 404), (aid, r.text)
    # Directory data is everyone's.
    assert await _ids(auth_server, token, "/Schedule?_id=acc-sch-1,acc-sch-2") == {
        "acc-sch-1", "acc-sch-2"}


async def test_auditor_reads_the_audit_trail_only(
    auth_server: AuthServer, tokens: Tokens
) -> None:
    for path in (SEARCH_PATIENTS, SEARCH_APPTS, "/Patient/acc-pat-1", "/Schedule"):
        r = await _get(auth_server, tokens.auditor, path)
        assert r.status_code == 403, (path, r.text)
        assert r.json()["resourceType"] == "OperationOutcome"
    # The patient's own reads above were audited; the auditor finds them by patient.
    await _get(auth_server, tokens.patient, "/Patient/acc-pat-1")
    r = await _get(auth_server, tokens.auditor, "/AuditEvent?patient=Patient/acc-pat-1")
    assert r.status_code == 200 and r.json().get("entry"), r.text
    for role in ("patient", "practitioner", "staff"):
        r = await _get(auth_server, getattr(tokens, role), "/AuditEvent")
        assert r.status_code == 403, (role, r.text)
    # Nor can the trail leak through _revinclude.
    got = await _ids(auth_server, tokens.patient,
                     "/Patient?_id=acc-pat-1&_revinclude=AuditEvent:patient")
    assert got == {"acc-pat-1"}


async def test_no_leak_through_include_revinclude_chain_history(
    auth_server: AuthServer, tokens: Tokens
) -> None:
    srv = auth_server
    # _include of a visible patient's link to an invisible one.
    got = await _ids(srv, tokens.practitioner, "/Patient?_id=acc-pat-4&_include=Patient:link")
    assert got == {"acc-pat-4"}
    assert await _ids(srv, tokens.system, "/Patient?_id=acc-pat-4&_include=Patient:link") == {
        "acc-pat-4", "acc-pat-2"}
    # _revinclude from a public Practitioner to someone else's appointment.
    got = await _ids(srv, tokens.patient,
                     "/Practitioner?_id=acc-pr-2&_revinclude=Appointment:practitioner")
    assert got == {"acc-pr-2", "acc-appt-3"}
    # A chain cannot probe another patient's name.
    assert await _ids(srv, tokens.patient, "/Appointment?patient.family=Zzother") == set()
    assert await _ids(srv, tokens.system, "/Appointment?patient.family=Zzother") == {
        "acc-appt-2"}
    # History: one's own resource yes, another's is 404, the whole type needs system.
    assert (await _get(srv, tokens.patient, "/Appointment/acc-appt-1/_history")).status_code \
        == 200
    assert (await _get(srv, tokens.patient, "/Appointment/acc-appt-2/_history")).status_code \
        == 404
    assert (await _get(srv, tokens.patient, "/Appointment/acc-appt-2/_history/1")).status_code \
        == 404
    assert (await _get(srv, tokens.patient, "/Appointment/_history")).status_code == 403
    assert (await _get(srv, tokens.patient, "/_history")).status_code == 403
    # Paging links re-apply the policy: page through one's own appointments one at a time.
    r = await _get(srv, tokens.patient, SEARCH_APPTS + "&_count=1")
    seen = set()
    while True:
        body = r.json()
        seen |= {e["resource"]["id"] for e in body.get("entry", [])}
        nxt = [link["url"] for link in body["link"] if link["relation"] == "next"]
        if not nxt:
            break
        async with httpx.AsyncClient(timeout=30) as c:
            r = await c.get(nxt[0], headers={"Authorization": f"Bearer {tokens.patient}"})
    assert seen == {"acc-appt-1", "acc-appt-3"}


async def test_writes_only_within_ones_own(auth_server: AuthServer, tokens: Tokens) -> None:
    srv = auth_server

    async def send(token: str, method: str, path: str, body: dict[str, Any]) -> int:
        async with httpx.AsyncClient(base_url=srv.fhir_base, timeout=30) as c:
            r = await c.request(method, path, json=body,
                                headers={**FHIR, "Authorization": f"Bearer {token}"})
            return r.status_code

    other = _appt("x", "acc-pat-2", "acc-pr-1", 10)
    del other["id"]
    assert await send(tokens.patient, "POST", "/Appointment", other) == 403
    own = _appt("x", "acc-pat-1", "acc-pr-1", 11)
    del own["id"]
    assert await send(tokens.patient, "POST", "/Appointment", own) == 201
    practitioner = dict(WORLD[2], active=False)
    assert await send(tokens.patient, "PUT", "/Practitioner/acc-pr-1", practitioner) == 403
    # The practitioner changes their own schedule, not a colleague's (readable: 403).
    sch1, sch2 = WORLD[7], WORLD[8]
    assert await send(tokens.practitioner, "PUT", "/Schedule/acc-sch-1",
                      dict(sch1, comment="mine")) == 200
    assert await send(tokens.practitioner, "PUT", "/Schedule/acc-sch-2",
                      dict(sch2, comment="theirs")) == 403
    # Staff manage their organization's practitioners' appointments, not another's (404).
    appt2 = dict(WORLD[-2], status="cancelled", cancelationReason={"text": "x"})
    assert await send(tokens.staff, "PUT", "/Appointment/acc-appt-2", appt2) == 404
    # Read-only system scopes write nothing; a transaction is checked entry by entry.
    assert await send(tokens.narrow_system, "POST", "/Appointment", own) == 403
    later = _appt("x", "acc-pat-1", "acc-pr-1", 12)
    del later["id"]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": later, "request": {"method": "POST", "url": "Appointment"}},
        {"request": {"method": "GET", "url": "Patient/acc-pat-2"}}]}
    assert await send(tokens.patient, "POST", "", bundle) == 404
    # Conditional criteria could reveal others' resources: system tokens only.
    async with httpx.AsyncClient(base_url=srv.fhir_base, timeout=30) as c:
        r = await c.post("/Appointment", json=own, headers={
            **FHIR, "Authorization": f"Bearer {tokens.patient}",
            "If-None-Exist": "identifier=x|y"})
    assert r.status_code == 403, r.text


async def test_scheduling_operations_as_a_patient(
    auth_server: AuthServer, tokens: Tokens
) -> None:
    srv = auth_server
    r = await _get(srv, tokens.patient, "/Appointment/$find?patient=Patient/acc-pat-2")
    assert r.status_code == 403, r.text
    r = await _get(srv, tokens.patient, "/Appointment/$find?patient=Patient/acc-pat-1")
    assert r.status_code == 200, r.text
    r = await _get(srv, tokens.auditor, "/Appointment/$find")
    assert r.status_code == 403, r.text


async def test_scope_decides_type_and_constraint(
    auth_server: AuthServer, tokens: Tokens
) -> None:
    srv = auth_server
    # A type the token was not granted is 403, never an empty 200.
    r = await _get(srv, tokens.narrow_system, "/Practitioner")
    assert r.status_code == 403 and r.json()["resourceType"] == "OperationOutcome"
    assert (await _get(srv, tokens.narrow_system, SEARCH_PATIENTS)).status_code == 403  # .r only
    assert (await _get(srv, tokens.narrow_system, "/Patient/acc-pat-2")).status_code == 200
    # A v2 query-constrained scope narrows searches and reads to its query.
    assert await _ids(srv, tokens.cancelled_only, SEARCH_APPTS) == {"acc-appt-3"}
    assert (await _get(srv, tokens.cancelled_only, "/Appointment/acc-appt-1")).status_code \
        == 404
    assert (await _get(srv, tokens.cancelled_only, "/Patient/acc-pat-1")).status_code == 403


async def test_401_without_a_good_token(auth_server: AuthServer, tokens: Tokens) -> None:
    srv = auth_server
    r = await _get(srv, None, "/Patient/acc-pat-1")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["resourceType"] == "OperationOutcome"
    r = await _get(srv, "not-a-jwt", "/Patient/acc-pat-1")
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
    head, body, sig = tokens.system.split(".")
    r = await _get(srv, f"{head}.{body}.{sig[:-4]}AAAA", "/Patient/acc-pat-1")
    assert r.status_code == 401
    # Public: CapabilityStatement, SMART discovery, health.
    for path in ("/metadata", "/.well-known/smart-configuration", "/health"):
        assert (await _get(srv, None, path)).status_code == 200, path


async def test_expired_and_revoked_tokens_are_refused(auth_server: AuthServer) -> None:
    srv = auth_server
    token = client_token_sync(srv.auth_base, SEEDER, SEEDER_SECRET, "system/Patient.rs")
    assert (await _get(srv, token, "/Patient/acc-pat-1")).status_code == 200
    srv.clock.advance(timedelta(seconds=srv.settings.auth_access_token_seconds + 1))
    try:
        assert (await _get(srv, token, "/Patient/acc-pat-1")).status_code == 401
    finally:
        srv.clock.advance(-timedelta(seconds=srv.settings.auth_access_token_seconds + 1))
    token = client_token_sync(srv.auth_base, SEEDER, SEEDER_SECRET, "system/Patient.rs")
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.post(f"{srv.auth_base}/revoke", auth=(SEEDER, SEEDER_SECRET),
                         data={"token": token})
        assert r.status_code == 200, r.text
    assert (await _get(srv, token, "/Patient/acc-pat-1")).status_code == 401


async def test_consent_narrows_to_a_query_constrained_scope(
    auth_server: AuthServer, tokens: Tokens
) -> None:
    """The user unchecks `patient/*.rs` and checks the offered `patient/Appointment.rs?
    status=booked`: the token carries the narrower scope and the API holds to it."""
    srv = auth_server
    narrow = "patient/Appointment.rs?status=booked"
    async with httpx.AsyncClient(timeout=30, follow_redirects=False) as http:
        params = AuthRequestParams(client_id=CONFIDENTIAL, aud=srv.fhir_base,
                                   scope="launch/patient patient/*.rs")
        got = await authorize(http, srv.auth_base, params, username="acc-pat",
                              uncheck=("patient/*.rs",), check=(narrow,))
        r = await exchange(http, srv.token_url, got["code"], params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["scope"].split() == ["launch/patient", narrow]
    token = body["access_token"]
    assert await _ids(srv, token, SEARCH_APPTS) == {"acc-appt-1"}  # booked, hers
    assert (await _get(srv, token, "/Appointment/acc-appt-3")).status_code == 404  # cancelled
    assert (await _get(srv, token, "/Patient/acc-pat-1")).status_code == 403  # not granted
