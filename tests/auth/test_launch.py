"""Standalone launch with the patient picker, and EHR launch through POST /auth/launch."""

from __future__ import annotations

import re
from urllib.parse import urlencode

import httpx

from tests.auth.conftest import AuthServer
from tests.auth.helpers import (
    CONFIDENTIAL,
    PASSWORD,
    AuthRequestParams,
    absolute,
    authorize,
    exchange,
    hidden,
    login,
    query_of,
    start,
)

APP_SCOPE = "launch/patient openid fhirUser patient/Appointment.rs patient/Patient.read"
EHR_SCOPE = "launch openid fhirUser patient/Appointment.rs"


def params(srv: AuthServer, scope: str, **extra: str) -> AuthRequestParams:
    return AuthRequestParams(client_id=CONFIDENTIAL, scope=scope, aud=srv.fhir_base, extra=extra)


async def system_token(http: httpx.AsyncClient, srv: AuthServer, scope: str) -> str:
    r = await http.post(
        srv.token_url,
        data={"grant_type": "client_credentials", "scope": scope},
        auth=("admin-service", "s3cret-admin"),
    )
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


async def new_launch(http: httpx.AsyncClient, srv: AuthServer, **body: str) -> str:
    token = await system_token(http, srv, "fhirserver:launch")
    r = await http.post(
        f"{srv.auth_base}/launch", json=body, headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 201, r.text
    assert r.json()["iss"] == srv.fhir_base
    launch: str = r.json()["launch"]
    return launch


async def test_standalone_practitioner_picks_patient(
    auth_server: AuthServer, http: httpx.AsyncClient
) -> None:
    srv = auth_server
    p = params(srv, APP_SCOPE)
    got = await authorize(http, srv.auth_base, p, username="dr-smith", patient="auth-pat-2")
    r = await exchange(http, srv.token_url, got["code"], p)
    tok = r.json()
    assert tok["patient"] == "auth-pat-2" and tok["need_patient_banner"] is True
    assert tok["fhirUser"].endswith("/Practitioner/auth-pr-1")
    info = await http.post(
        f"{srv.auth_base}/introspect",
        data={"token": tok["access_token"]},
        auth=(CONFIDENTIAL, "s3cret-conf"),
    )
    assert info.json()["patient"] == "auth-pat-2"  # launch context reaches introspection


async def test_picker_search_and_validation(
    auth_server: AuthServer, http: httpx.AsyncClient
) -> None:
    srv = auth_server
    r = await start(http, srv.auth_base, params(srv, APP_SCOPE))
    r = await login(http, srv.auth_base, r.headers["location"], "clerk", PASSWORD)
    picker = r.headers["location"]
    assert "/auth/picker" in picker
    page = await http.get(absolute(srv.auth_base, picker) + "&" + urlencode({"q": "Pickme"}))
    assert "Bob Pickme" in page.text and "Carol Pickme" in page.text
    assert "Alice" not in page.text
    form = {"req": hidden(page.text, "req"), "csrf": hidden(page.text, "csrf")}
    bad = await http.post(f"{srv.auth_base}/picker", data={**form, "patient": "no-such-patient"})
    assert bad.status_code == 400
    forged = await http.post(
        f"{srv.auth_base}/picker", data={**form, "csrf": "forged", "patient": "auth-pat-3"}
    )
    assert forged.status_code == 400
    ok = await http.post(f"{srv.auth_base}/picker", data={**form, "patient": "auth-pat-3"})
    assert ok.status_code == 303 and "/auth/consent" in ok.headers["location"]
    consent = await http.get(absolute(srv.auth_base, ok.headers["location"]))
    assert "Carol Pickme" in consent.text


async def test_picker_offers_only_the_users_own_patients(
    auth_server: AuthServer, http: httpx.AsyncClient
) -> None:
    """The clerk picks among the clinic's patients, Dr. Smith among his; neither sees, nor
    can post, Alice (nobody's patient here)."""
    srv = auth_server
    for username, mine, others in (
        ("clerk", {"auth-pat-2", "auth-pat-3"}, {"auth-pat-1"}),
        ("dr-smith", {"auth-pat-2"}, {"auth-pat-1", "auth-pat-3"}),
    ):
        async with httpx.AsyncClient(timeout=30, follow_redirects=False) as browser:
            r = await start(browser, srv.auth_base, params(srv, APP_SCOPE))
            r = await login(browser, srv.auth_base, r.headers["location"], username, PASSWORD)
            page = await browser.get(absolute(srv.auth_base, r.headers["location"]))
            listed = set(re.findall(r'value="(auth-pat-\d+)"', page.text))
            assert listed == mine, (username, listed)
            form = {"req": hidden(page.text, "req"), "csrf": hidden(page.text, "csrf")}
            for pid in sorted(others):
                bad = await browser.post(f"{srv.auth_base}/picker", data={**form, "patient": pid})
                assert bad.status_code == 400, (username, pid)


async def test_patient_scopes_never_reach_past_the_users_own_patients(
    auth_server: AuthServer, http: httpx.AsyncClient
) -> None:
    """An EHR launch may put any patient in context; a practitioner's patient/ scopes still
    reach only their own patients: in another's context they grant nothing (403 whatever
    the id, so existence is not disclosed)."""
    srv = auth_server
    scope = "launch openid fhirUser patient/Patient.rs patient/Appointment.rs"
    seen: dict[str, int] = {}
    for pid in ("auth-pat-2", "auth-pat-3"):
        launch = await new_launch(http, srv, patient=pid)
        p = params(srv, scope, launch=launch)
        async with httpx.AsyncClient(timeout=30, follow_redirects=False) as browser:
            got = await authorize(browser, srv.auth_base, p, username="dr-smith")
            tok = (await exchange(browser, srv.token_url, got["code"], p)).json()
        assert tok["patient"] == pid
        headers = {"Authorization": f"Bearer {tok['access_token']}"}
        r = await http.get(f"{srv.fhir_base}/Patient/{pid}", headers=headers)
        listed = await http.get(f"{srv.fhir_base}/Patient", headers=headers)
        appointments = await http.get(f"{srv.fhir_base}/Appointment", headers=headers)
        seen[pid] = (r.status_code, listed.status_code, appointments.status_code)
        if r.status_code == 200:
            assert [e["resource"]["id"] for e in listed.json()["entry"]] == [pid]
    assert seen == {"auth-pat-2": (200, 200, 200), "auth-pat-3": (403, 403, 403)}


async def test_flow_bound_to_browser(auth_server: AuthServer, http: httpx.AsyncClient) -> None:
    """Another browser (no cookies) cannot continue someone's pending request."""
    srv = auth_server
    r = await start(http, srv.auth_base, params(srv, APP_SCOPE))
    login_url = absolute(srv.auth_base, r.headers["location"])
    async with httpx.AsyncClient(timeout=30) as other:
        page = await other.get(login_url)
        assert page.status_code == 403


async def test_patient_user_bound_to_own_record(
    auth_server: AuthServer, http: httpx.AsyncClient
) -> None:
    srv = auth_server
    p = params(srv, APP_SCOPE)
    got = await authorize(http, srv.auth_base, p, username="alice")  # no picker for patients
    tok = (await exchange(http, srv.token_url, got["code"], p)).json()
    assert tok["patient"] == "auth-pat-1"
    assert tok["fhirUser"].endswith("/Patient/auth-pat-1")


async def test_ehr_launch(auth_server: AuthServer, http: httpx.AsyncClient) -> None:
    srv = auth_server
    launch = await new_launch(http, srv, patient="auth-pat-2")
    p = params(srv, EHR_SCOPE, launch=launch)
    got = await authorize(http, srv.auth_base, p, username="dr-smith")
    tok = (await exchange(http, srv.token_url, got["code"], p)).json()
    assert tok["patient"] == "auth-pat-2"
    assert tok["need_patient_banner"] is False
    assert tok["scope"] == EHR_SCOPE


async def test_ehr_launch_rejections(auth_server: AuthServer, http: httpx.AsyncClient) -> None:
    srv = auth_server
    # unknown launch
    got = query_of(
        (await start(http, srv.auth_base, params(srv, EHR_SCOPE, launch="nope"))).headers[
            "location"
        ]
    )
    assert got["error"] == "invalid_request" and "launch" in got["error_description"]
    # launch scope without a launch parameter
    got = query_of((await start(http, srv.auth_base, params(srv, EHR_SCOPE))).headers["location"])
    assert got["error"] == "invalid_request"
    # launch parameter without the launch scope
    launch = await new_launch(http, srv, patient="auth-pat-2")
    r = await start(
        http, srv.auth_base, params(srv, "openid patient/Appointment.rs", launch=launch)
    )
    assert query_of(r.headers["location"])["error"] == "invalid_scope"
    # a launch created for another client
    launch = await new_launch(http, srv, patient="auth-pat-2", client_id="public-app")
    r = await start(http, srv.auth_base, params(srv, EHR_SCOPE, launch=launch))
    assert query_of(r.headers["location"])["error"] == "invalid_request"
    # a patient may not EHR-launch into someone else's record
    launch = await new_launch(http, srv, patient="auth-pat-2")
    p = params(srv, EHR_SCOPE, launch=launch)
    r = await start(http, srv.auth_base, p)
    r = await login(http, srv.auth_base, r.headers["location"], "alice", PASSWORD)
    got = query_of(r.headers["location"])
    assert got["error"] == "access_denied" and got["state"] == p.state


async def test_launch_api_requires_authorization(
    auth_server: AuthServer, http: httpx.AsyncClient
) -> None:
    srv = auth_server
    url = f"{srv.auth_base}/launch"
    r = await http.post(url, json={"patient": "auth-pat-1"})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    r = await http.post(
        url, json={"patient": "auth-pat-1"}, headers={"Authorization": "Bearer x.y.z"}
    )
    assert r.status_code == 401
    token = await system_token(http, srv, "system/*.rs")
    r = await http.post(
        url, json={"patient": "auth-pat-1"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 403 and r.json()["error"] == "insufficient_scope"
    token = await system_token(http, srv, "fhirserver:launch")
    r = await http.post(
        url, json={"patient": "missing"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 400
