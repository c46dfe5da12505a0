"""Authorization code + PKCE over real HTTP: the happy path and every rejection."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

import httpx
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.auth.conftest import AuthServer
from tests.auth.helpers import (
    CONFIDENTIAL,
    CONFIDENTIAL_SECRET,
    PASSWORD,
    PUBLIC,
    AuthRequestParams,
    absolute,
    authorize,
    consent,
    exchange,
    hidden,
    login,
    query_of,
    start,
    unverified_claims,
)

USER_SCOPE = "openid fhirUser offline_access user/Appointment.rs user/Patient.read"


def params(srv: AuthServer, scope: str = USER_SCOPE, **kw: object) -> AuthRequestParams:
    return AuthRequestParams(
        client_id=kw.pop("client_id", CONFIDENTIAL),  # type: ignore[arg-type]
        scope=scope,
        aud=kw.pop("aud", srv.fhir_base),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


async def introspect(
    http: httpx.AsyncClient, srv: AuthServer, token: str, auth: tuple[str, str] | None = None
) -> httpx.Response:
    return await http.post(
        f"{srv.auth_base}/introspect",
        data={"token": token},
        auth=auth or (CONFIDENTIAL, CONFIDENTIAL_SECRET),
    )


async def test_full_flow(auth_server: AuthServer, http: httpx.AsyncClient) -> None:
    """authorize -> login -> consent -> code -> token -> refresh -> introspect -> revoke."""
    srv = auth_server
    p = params(srv, extra={"nonce": "n-123"})
    got = await authorize(http, srv.auth_base, p, username="dr-smith")
    assert got["state"] == p.state
    r = await exchange(http, srv.token_url, got["code"], p)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    tok = r.json()
    assert tok["token_type"] == "Bearer" and tok["expires_in"] == 3600
    assert tok["scope"] == USER_SCOPE
    assert tok["fhirUser"] == f"{srv.fhir_base}/Practitioner/auth-pr-1"
    assert tok["refresh_token"]
    # The access token is a JWT signed by a key from the JWKS, with a kid.
    jwks = (await http.get(f"{srv.auth_base}/jwks")).json()
    claims = jwt.decode(tok["access_token"], KeySet.import_key_set(jwks)).claims
    assert claims["aud"] == srv.fhir_base and claims["iss"] == srv.fhir_base
    assert claims["scope"] == USER_SCOPE and claims["client_id"] == CONFIDENTIAL
    assert claims["sub"] == "dr-smith"
    # id_token: openid + fhirUser
    idt = jwt.decode(tok["id_token"], KeySet.import_key_set(jwks)).claims
    assert idt["aud"] == CONFIDENTIAL and idt["sub"] == "dr-smith" and idt["nonce"] == "n-123"
    assert idt["fhirUser"] == tok["fhirUser"] and idt["iss"] == srv.fhir_base

    info = (await introspect(http, srv, tok["access_token"])).json()
    assert info["active"] is True
    assert info["scope"] == USER_SCOPE and info["client_id"] == CONFIDENTIAL
    assert info["sub"] == "dr-smith" and info["fhirUser"] == tok["fhirUser"]
    assert info["exp"] == claims["exp"]

    # refresh: rotates
    r = await http.post(
        srv.token_url,
        data={"grant_type": "refresh_token", "refresh_token": tok["refresh_token"]},
        auth=(CONFIDENTIAL, CONFIDENTIAL_SECRET),
    )
    assert r.status_code == 200, r.text
    new = r.json()
    assert new["refresh_token"] != tok["refresh_token"]
    assert new["scope"] == USER_SCOPE
    assert (await introspect(http, srv, new["access_token"])).json()["active"] is True

    # revoke the new access token: inactive afterwards
    r = await http.post(
        f"{srv.auth_base}/revoke",
        data={"token": new["access_token"]},
        auth=(CONFIDENTIAL, CONFIDENTIAL_SECRET),
    )
    assert r.status_code == 200
    assert (await introspect(http, srv, new["access_token"])).json() == {"active": False}
    # revoking the refresh token ends the grant: refresh refused
    await http.post(
        f"{srv.auth_base}/revoke",
        data={"token": new["refresh_token"], "token_type_hint": "refresh_token"},
        auth=(CONFIDENTIAL, CONFIDENTIAL_SECRET),
    )
    r = await http.post(
        srv.token_url,
        data={"grant_type": "refresh_token", "refresh_token": new["refresh_token"]},
        auth=(CONFIDENTIAL, CONFIDENTIAL_SECRET),
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


async def test_public_client_with_pkce(auth_server: AuthServer, http: httpx.AsyncClient) -> None:
    srv = auth_server
    p = params(srv, "patient/Appointment.rs launch/patient online_access", client_id=PUBLIC)
    got = await authorize(http, srv.auth_base, p, username="alice")
    r = await exchange(http, srv.token_url, got["code"], p, secret=None)
    assert r.status_code == 200, r.text
    tok = r.json()
    assert tok["patient"] == "auth-pat-1"  # a patient user is bound to their own Patient
    assert tok["refresh_token"]  # online_access
    assert r.headers["access-control-allow-origin"] == "*"
    info = (await introspect(http, srv, tok["access_token"])).json()
    assert info["active"] is False  # introspection needs client auth; public: its own tokens
    r = await http.post(
        f"{srv.auth_base}/introspect", data={"token": tok["access_token"], "client_id": PUBLIC}
    )
    assert r.json()["active"] is True and r.json()["patient"] == "auth-pat-1"


async def test_wrong_password_then_right(auth_server: AuthServer, http: httpx.AsyncClient) -> None:
    srv = auth_server
    p = params(srv)
    r = await start(http, srv.auth_base, p)
    bad = await login(http, srv.auth_base, r.headers["location"], "dr-smith", "nope")
    assert bad.status_code == 401 and "wrong password" in bad.text
    good = await login(http, srv.auth_base, r.headers["location"], "dr-smith", PASSWORD)
    assert good.status_code == 303 and "/auth/consent" in good.headers["location"]


async def test_consent_narrows_scope(auth_server: AuthServer, http: httpx.AsyncClient) -> None:
    srv = auth_server
    p = params(srv)
    got = await authorize(
        http, srv.auth_base, p, username="dr-smith", uncheck=("user/Patient.read", "offline_access")
    )
    tok = (await exchange(http, srv.token_url, got["code"], p)).json()
    assert tok["scope"] == "openid fhirUser user/Appointment.rs"
    assert "refresh_token" not in tok  # offline_access unchecked


async def test_deny_redirects_access_denied(
    auth_server: AuthServer, http: httpx.AsyncClient
) -> None:
    srv = auth_server
    p = params(srv)
    r = await start(http, srv.auth_base, p)
    r = await login(http, srv.auth_base, r.headers["location"], "dr-smith", PASSWORD)
    r, _ = await consent(http, srv.auth_base, r.headers["location"], decision="deny")
    got = query_of(r.headers["location"])
    assert got["error"] == "access_denied" and got["state"] == p.state


async def test_client_scope_limits_request(
    auth_server: AuthServer, http: httpx.AsyncClient
) -> None:
    """A client asking beyond its registration gets at most what it is registered for."""
    srv = auth_server
    p = params(srv, "user/Appointment.rs system/*.rs")
    got = await authorize(http, srv.auth_base, p, username="dr-smith")
    tok = (await exchange(http, srv.token_url, got["code"], p)).json()
    assert tok["scope"] == "user/Appointment.rs"


# ---- PKCE ----------------------------------------------------------------------------


async def test_plain_pkce_rejected(auth_server: AuthServer, http: httpx.AsyncClient) -> None:
    srv = auth_server
    p = params(srv, method="plain")
    p.challenge = p.verifier
    r = await start(http, srv.auth_base, p)
    assert r.status_code == 302
    got = query_of(r.headers["location"])
    assert got["error"] == "invalid_request" and "S256" in got["error_description"]
    assert got["state"] == p.state


async def test_missing_pkce_rejected(auth_server: AuthServer, http: httpx.AsyncClient) -> None:
    """Confidential clients too: authlib would only insist for public clients."""
    srv = auth_server
    p = params(srv, method=None)
    p.challenge = ""
    got = query_of((await start(http, srv.auth_base, p)).headers["location"])
    assert got["error"] == "invalid_request" and "code_challenge" in got["error_description"]
    # challenge without a method would default to plain in authlib: refused too
    p2 = params(srv, method=None)
    got = query_of((await start(http, srv.auth_base, p2)).headers["location"])
    assert got["error"] == "invalid_request"


async def test_missing_or_wrong_verifier_rejected(
    auth_server: AuthServer, http: httpx.AsyncClient
) -> None:
    srv = auth_server
    p = params(srv)
    got = await authorize(http, srv.auth_base, p, username="dr-smith")
    r = await exchange(http, srv.token_url, got["code"], p, verifier="")
    assert r.status_code == 400 and "code_verifier" in r.json()["error_description"]
    p = params(srv)
    got = await authorize(http, srv.auth_base, p, username="dr-smith")
    r = await exchange(http, srv.token_url, got["code"], p, verifier="x" * 50)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


# ---- redirect_uri, aud, codes ------------------------------------------------------------


async def test_unregistered_redirect_uri_not_followed(
    auth_server: AuthServer, http: httpx.AsyncClient
) -> None:
    srv = auth_server
    for uri in (
        "http://127.0.0.1:9/callback/",
        "http://127.0.0.1:9/callback?x=1",
        "https://evil.example/cb",
    ):
        r = await start(http, srv.auth_base, params(srv, redirect_uri=uri))
        assert r.status_code == 400 and "location" not in r.headers, uri
    p = params(srv)
    p.redirect_uri = ""
    r = await http.get(
        f"{srv.auth_base}/authorize?" + urlencode({k: v for k, v in p.query().items() if v})
    )
    assert r.status_code == 400 and "redirect_uri" in r.text


async def test_token_redirect_uri_must_match(
    auth_server: AuthServer, http: httpx.AsyncClient
) -> None:
    srv = auth_server
    p = params(srv)
    got = await authorize(http, srv.auth_base, p, username="dr-smith")
    r = await exchange(http, srv.token_url, got["code"], p, redirect_uri="http://127.0.0.1:9/other")
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


async def test_wrong_aud_rejected(auth_server: AuthServer, http: httpx.AsyncClient) -> None:
    srv = auth_server
    for aud in ("https://other.example/fhir", srv.fhir_base + "/Patient", ""):
        p = params(srv, aud=aud)
        r = await start(http, srv.auth_base, p)
        got = query_of(r.headers["location"])
        assert got["error"] == "invalid_request" and "aud" in got["error_description"], aud
    # a trailing slash is the same base
    r = await start(http, srv.auth_base, params(srv, aud=srv.fhir_base + "/"))
    assert "/auth/login" in r.headers["location"]


async def test_code_is_single_use(auth_server: AuthServer, http: httpx.AsyncClient) -> None:
    srv = auth_server
    p = params(srv)
    got = await authorize(http, srv.auth_base, p, username="dr-smith")
    first = await exchange(http, srv.token_url, got["code"], p)
    assert first.status_code == 200
    again = await exchange(http, srv.token_url, got["code"], p)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    # the replay revoked what the first redemption got
    info = (await introspect(http, srv, first.json()["access_token"])).json()
    assert info == {"active": False}


async def test_code_of_another_client_refused(
    auth_server: AuthServer, http: httpx.AsyncClient
) -> None:
    srv = auth_server
    p = params(srv)
    got = await authorize(http, srv.auth_base, p, username="dr-smith")
    other = AuthRequestParams(client_id=PUBLIC, scope=p.scope, aud=p.aud, verifier=p.verifier)
    r = await exchange(http, srv.token_url, got["code"], other, secret=None)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


async def test_wrong_client_secret(auth_server: AuthServer, http: httpx.AsyncClient) -> None:
    r = await http.post(
        auth_server.token_url,
        data={"grant_type": "authorization_code", "code": "x", "redirect_uri": "x"},
        auth=(CONFIDENTIAL, "wrong"),
    )
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


# ---- refresh ----------------------------------------------------------------------------------


async def _refreshable(srv: AuthServer, http: httpx.AsyncClient) -> dict[str, str]:
    p = params(srv)
    got = await authorize(http, srv.auth_base, p, username="dr-smith")
    tok: dict[str, str] = (await exchange(http, srv.token_url, got["code"], p)).json()
    return tok


async def refresh(
    http: httpx.AsyncClient, srv: AuthServer, token: str, scope: str | None = None
) -> httpx.Response:
    data = {"grant_type": "refresh_token", "refresh_token": token}
    if scope is not None:
        data["scope"] = scope
    return await http.post(srv.token_url, data=data, auth=(CONFIDENTIAL, CONFIDENTIAL_SECRET))


async def test_reused_refresh_token_refused(
    auth_server: AuthServer, http: httpx.AsyncClient
) -> None:
    srv = auth_server
    tok = await _refreshable(srv, http)
    first = await refresh(http, srv, tok["refresh_token"])
    assert first.status_code == 200
    again = await refresh(http, srv, tok["refresh_token"])
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    # reuse of a rotated token ends the grant: the newest refresh token is dead too
    newest = await refresh(http, srv, first.json()["refresh_token"])
    assert newest.status_code == 400


async def test_refresh_may_narrow_never_widen(
    auth_server: AuthServer, http: httpx.AsyncClient
) -> None:
    srv = auth_server
    tok = await _refreshable(srv, http)
    wider = await refresh(http, srv, tok["refresh_token"], USER_SCOPE + " user/Slot.rs")
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"
    more_perms = await refresh(http, srv, tok["refresh_token"], "user/Appointment.cruds")
    assert more_perms.status_code == 400 and more_perms.json()["error"] == "invalid_scope"
    # v2 .rs asks for exactly what v1 .read granted: allowed (a plain string compare refuses)
    narrow = await refresh(
        http, srv, tok["refresh_token"], "user/Patient.rs user/Appointment.r offline_access"
    )
    assert narrow.status_code == 200, narrow.text
    body = narrow.json()
    assert body["scope"] == "user/Patient.rs user/Appointment.r offline_access"
    # and the new refresh token cannot widen back
    back = await refresh(http, srv, body["refresh_token"], USER_SCOPE)
    assert back.status_code == 400 and back.json()["error"] == "invalid_scope"


# ---- introspection ----------------------------------------------------------------------------


async def test_introspection_inactive_cases(
    auth_server: AuthServer, http: httpx.AsyncClient
) -> None:
    srv = auth_server
    for junk in ("nope", "a.b.c", "x" * 9000):
        r = await introspect(http, srv, junk)
        assert r.status_code == 200 and r.json() == {"active": False}
    r = await http.post(
        f"{srv.auth_base}/introspect",
        data={"token": "nope", "token_type_hint": "weird"},
        auth=(CONFIDENTIAL, CONFIDENTIAL_SECRET),
    )
    assert r.status_code == 200 and r.json() == {"active": False}
    tok = await _refreshable(srv, http)
    # tampered: flip the scope in the payload, keep the signature
    head, payload, sig = tok["access_token"].split(".")
    claims = unverified_claims(tok["access_token"])
    claims["scope"] = "system/*.cruds"
    import base64
    import json

    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    assert (await introspect(http, srv, f"{head}.{forged}.{sig}")).json() == {"active": False}
    # alg=none with the same claims
    none_head = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').decode().rstrip("=")
    assert (await introspect(http, srv, f"{none_head}.{payload}.")).json() == {"active": False}
    # unauthenticated introspection is refused outright
    r = await http.post(f"{srv.auth_base}/introspect", data={"token": tok["access_token"]})
    assert r.status_code in (400, 401) and r.json()["error"] == "invalid_client"


async def test_expired_token_introspects_inactive(
    auth_server: AuthServer, http: httpx.AsyncClient
) -> None:
    srv = auth_server
    tok = await _refreshable(srv, http)
    assert (await introspect(http, srv, tok["access_token"])).json()["active"] is True
    srv.clock.advance(timedelta(hours=2))
    try:
        assert (await introspect(http, srv, tok["access_token"])).json() == {"active": False}
        # the refresh token (offline_access) lives on
        info = (await introspect(http, srv, tok["refresh_token"])).json()
        assert info["active"] is True and info["token_type"] == "refresh_token"
    finally:
        srv.clock.advance(timedelta(hours=-2))


async def test_introspect_other_clients_token_inactive(
    auth_server: AuthServer, http: httpx.AsyncClient
) -> None:
    srv = auth_server
    tok = await _refreshable(srv, http)
    r = await http.post(
        f"{srv.auth_base}/introspect", data={"token": tok["access_token"], "client_id": PUBLIC}
    )
    assert r.status_code == 200 and r.json() == {"active": False}


# ---- browser session ---------------------------------------------------------------------


async def test_session_reused_then_logout_ends_online_refresh(
    auth_server: AuthServer, http: httpx.AsyncClient
) -> None:
    srv = auth_server
    p = params(srv, "openid patient/Appointment.rs launch/patient online_access")
    got = await authorize(http, srv.auth_base, p, username="alice")
    tok = (await exchange(http, srv.token_url, got["code"], p)).json()
    assert tok["refresh_token"]
    # the same browser is still signed in: straight to consent
    r = await start(http, srv.auth_base, params(srv))
    assert "/auth/consent" in r.headers["location"]
    # signing out ends the session, and with it the online_access refresh token
    assert (await http.get(f"{srv.auth_base}/logout")).status_code == 200
    r = await refresh(http, srv, tok["refresh_token"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


async def test_login_throttled(auth_server: AuthServer, http: httpx.AsyncClient) -> None:
    srv = auth_server
    r = await start(http, srv.auth_base, params(srv))
    statuses = [
        (await login(http, srv.auth_base, r.headers["location"], "nobody-here", "x")).status_code
        for _ in range(11)
    ]
    assert statuses[:10] == [401] * 10 and statuses[10] == 429


async def test_consent_cannot_add_scopes(auth_server: AuthServer, http: httpx.AsyncClient) -> None:
    srv = auth_server
    r = await start(http, srv.auth_base, params(srv, "user/Appointment.rs"))
    r = await login(http, srv.auth_base, r.headers["location"], "dr-smith", PASSWORD)
    page = await http.get(absolute(srv.auth_base, r.headers["location"]))
    form = {
        "req": hidden(page.text, "req"),
        "csrf": hidden(page.text, "csrf"),
        "decision": "allow",
        "scope": ["user/Appointment.rs", "user/*.cruds"],
    }
    bad = await http.post(f"{srv.auth_base}/consent", data=form)
    assert bad.status_code == 400 and "location" not in bad.headers
    forged = await http.post(
        f"{srv.auth_base}/consent", data={**form, "csrf": "x", "scope": ["user/Appointment.rs"]}
    )
    assert forged.status_code == 400
    ok = await http.post(
        f"{srv.auth_base}/consent", data={**form, "scope": ["user/Appointment.rs"]}
    )
    assert ok.status_code == 303 and "code=" in ok.headers["location"]
    # answered once
    again = await http.post(
        f"{srv.auth_base}/consent", data={**form, "scope": ["user/Appointment.rs"]}
    )
    assert again.status_code == 400
