"""Logins (success and failure) and token requests are audited; tokens never are."""

from __future__ import annotations

from typing import Any

import httpx

from tests.audit.conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    PASSWORD,
    REDIRECT,
    AuditServer,
    codes,
    entities,
    only_event,
    patient_refs,
    stored_trail,
)
from tests.auth.helpers import (
    AuthRequestParams,
    consent,
    exchange,
    login,
    query_of,
    start,
    unverified_claims,
)


def _agent(event: dict[str, Any], type_code: str) -> dict[str, Any]:
    (agent,) = [a for a in event["agent"] if type_code in codes(a["type"]["coding"])]
    return agent


async def test_client_credentials_token_is_audited_by_jti(
    audit_server: AuditServer, client: httpx.AsyncClient, audit_db: Any
) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(
            f"{audit_server.auth_base}/token",
            data={"grant_type": "client_credentials", "scope": "system/*.rs"},
            auth=(CLIENT_ID, CLIENT_SECRET),
        )
        assert r.status_code == 200, r.text
        token = r.json()["access_token"]
        jti = unverified_claims(token)["jti"]
        event = await only_event(client, r)
        assert event["type"]["code"] == "110114" and codes(event["subtype"]) == {"ITI-71"}
        assert event["outcome"] == "0" and event["action"] == "E"
        agent = _agent(event, "110153")
        assert agent["who"]["identifier"]["value"] == CLIENT_ID
        assert agent["policy"] == [jti]
        (tok,) = entities(event, "13")
        assert tok["what"]["identifier"]["value"] == jti
        assert {"type": "grant_type", "valueString": "client_credentials"} in tok["detail"]
        found = await client.get("/AuditEvent", params={"policy": jti})
        assert found.json()["total"] == 1

        r = await http.post(
            f"{audit_server.auth_base}/token",
            data={"grant_type": "client_credentials", "scope": "system/*.rs"},
            auth=(CLIENT_ID, "wrong-secret"),
        )
        assert r.status_code in (400, 401)
        refused = await only_event(client, r)
        assert refused["outcome"] == "4"
        assert refused["outcomeDesc"] == r.json()["error"]
        assert _agent(refused, "110153")["who"]["identifier"]["value"] == CLIENT_ID

    secrets = [token.encode(), CLIENT_SECRET.encode(), b"wrong-secret"]
    for raw in await stored_trail(audit_db, audit_server.settings):
        assert not any(s in raw for s in secrets)


async def test_login_failure_success_and_code_token(
    audit_server: AuditServer, client: httpx.AsyncClient, audit_db: Any
) -> None:
    params = AuthRequestParams(
        client_id=CLIENT_ID,
        scope="openid fhirUser user/*.rs",
        aud=audit_server.base_url,
        redirect_uri=REDIRECT,
    )
    async with httpx.AsyncClient(timeout=30, follow_redirects=False) as http:
        auth_base = audit_server.auth_base
        r = await start(http, auth_base, params)
        assert r.status_code == 302, r.text
        login_url = r.headers["location"]

        r = await login(http, auth_base, login_url, "audit-dr", "not the password")
        assert r.status_code == 401
        failed = await only_event(client, r)
        assert codes(failed["subtype"]) == {"110122"} and failed["outcome"] == "4"
        user = _agent(failed, "IRCP")
        assert user["who"]["identifier"]["value"] == "audit-dr" and user["requestor"] is True

        r = await login(http, auth_base, login_url, "audit-dr", PASSWORD)
        assert r.status_code == 303, r.text
        ok = await only_event(client, r)
        assert ok["outcome"] == "0" and ok["outcomeDesc"] == "login succeeded"

        r, _ = await consent(http, auth_base, r.headers["location"])
        assert r.status_code == 303, r.text
        code = query_of(r.headers["location"])["code"]
        r = await exchange(http, f"{auth_base}/token", code, params, secret=CLIENT_SECRET)
        assert r.status_code == 200, r.text
        body = r.json()
        issued = await only_event(client, r)
        jti = unverified_claims(body["access_token"])["jti"]
        user = _agent(issued, "IRCP")
        assert user["who"]["reference"] == "Practitioner/audit-pr-1"
        assert user["who"]["identifier"]["value"] == "audit-dr"
        assert user["policy"] == [jti]
        assert patient_refs(issued) == set()

    forbidden = [body["access_token"], body["id_token"], PASSWORD, code, params.verifier]
    for raw in await stored_trail(audit_db, audit_server.settings):
        text = raw.decode()
        assert not any(s in text for s in forbidden), text
