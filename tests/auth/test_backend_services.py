"""SMART Backend Services: client_credentials with private_key_jwt (RS384 and ES384)."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.auth.conftest import AuthServer, BackendKeys
from tests.auth.helpers import (
    ASSERTION_TYPE,
    assertion,
    new_ec_key,
    new_rsa_key,
    public_jwks,
    unverified_claims,
)


async def token_request(
    http: httpx.AsyncClient, srv: AuthServer, client_assertion: str, scope: str
) -> httpx.Response:
    return await http.post(
        srv.token_url,
        data={
            "grant_type": "client_credentials",
            "scope": scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion,
        },
    )


async def test_rs384_accepted(
    auth_server: AuthServer, http: httpx.AsyncClient, backend_keys: BackendKeys
) -> None:
    srv = auth_server
    jwt_ = assertion(backend_keys.rsa, "backend-rs384", srv.token_url, alg="RS384")
    r = await token_request(http, srv, jwt_, "system/Appointment.rs")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["scope"] == "system/Appointment.rs" and "refresh_token" not in body
    claims = unverified_claims(body["access_token"])
    assert claims["sub"] == "backend-rs384" and claims["client_id"] == "backend-rs384"


async def test_es384_accepted(
    auth_server: AuthServer, http: httpx.AsyncClient, backend_keys: BackendKeys
) -> None:
    srv = auth_server
    jwt_ = assertion(backend_keys.ec, "backend-es384", srv.token_url, alg="ES384")
    r = await token_request(http, srv, jwt_, "system/Slot.rs system/Schedule.read")
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "system/Slot.rs system/Schedule.read"


async def test_jti_replay_refused(
    auth_server: AuthServer, http: httpx.AsyncClient, backend_keys: BackendKeys
) -> None:
    srv = auth_server
    jwt_ = assertion(backend_keys.rsa, "backend-rs384", srv.token_url)
    assert (await token_request(http, srv, jwt_, "system/Slot.rs")).status_code == 200
    again = await token_request(http, srv, jwt_, "system/Slot.rs")
    assert again.status_code == 400 and again.json()["error"] == "invalid_client"
    assert "jti" in again.json()["error_description"]
    # the same jti in a fresh assertion is a replay too
    jti = uuid.uuid4().hex
    first = assertion(backend_keys.rsa, "backend-rs384", srv.token_url, jti=jti)
    second = assertion(backend_keys.rsa, "backend-rs384", srv.token_url, jti=jti, exp_in=200)
    assert (await token_request(http, srv, first, "system/Slot.rs")).status_code == 200
    assert (await token_request(http, srv, second, "system/Slot.rs")).status_code == 400


@pytest.mark.parametrize(("exp_in", "ok"), [(600, False), (340, False), (290, True), (-120, False)])
async def test_exp_window(
    auth_server: AuthServer,
    http: httpx.AsyncClient,
    backend_keys: BackendKeys,
    exp_in: int,
    ok: bool,
) -> None:
    """exp at most 5 minutes ahead (30 s clock skew allowed), and not in the past."""
    srv = auth_server
    jwt_ = assertion(backend_keys.rsa, "backend-rs384", srv.token_url, exp_in=exp_in)
    r = await token_request(http, srv, jwt_, "system/Slot.rs")
    assert (r.status_code == 200) is ok, r.text


async def test_bad_assertions_refused(
    auth_server: AuthServer, http: httpx.AsyncClient, backend_keys: BackendKeys
) -> None:
    srv = auth_server
    cid = "backend-rs384"

    async def refused(token: str, why: str) -> None:
        r = await token_request(http, srv, token, "system/Slot.rs")
        assert r.status_code in (400, 401), (why, r.text)
        assert r.json()["error"] == "invalid_client", why

    # wrong aud: the FHIR base, not the token endpoint
    await refused(assertion(backend_keys.rsa, cid, srv.fhir_base), "aud")
    # alg none
    good = assertion(backend_keys.rsa, cid, srv.token_url)
    head = (
        base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT","kid":"rsa-1"}').decode().rstrip("=")
    )
    await refused(f"{head}.{good.split('.')[1]}.", "alg=none")
    # tampered payload (scope of another client)
    claims = unverified_claims(good)
    claims["sub"] = claims["iss"] = "backend-es384"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    h, _, s = good.split(".")
    await refused(f"{h}.{forged}.{s}", "tampered")
    # signed by a key the client did not register
    await refused(assertion(new_rsa_key("rsa-1"), cid, srv.token_url), "unknown key")
    # RS256 is not among the advertised algorithms
    await refused(assertion(backend_keys.rsa, cid, srv.token_url, alg="RS256"), "RS256")
    # iss != sub
    await refused(assertion(backend_keys.rsa, cid, srv.token_url, iss="someone"), "iss")
    # no jti
    bad = assertion(backend_keys.rsa, cid, srv.token_url, jti="")
    await refused(bad, "jti")
    # a symmetric client cannot use private_key_jwt
    await refused(assertion(backend_keys.rsa, "conf-app", srv.token_url), "symmetric")


async def test_scope_beyond_preauthorized_refused(
    auth_server: AuthServer, http: httpx.AsyncClient, backend_keys: BackendKeys
) -> None:
    srv = auth_server

    async def ask(scope: str) -> httpx.Response:
        jwt_ = assertion(backend_keys.rsa, "backend-rs384", srv.token_url)
        return await token_request(http, srv, jwt_, scope)

    for scope in (
        "system/Patient.rs",  # registered system/Patient.r only
        "system/Appointment.cruds",
        "system/*.rs",
        "patient/Appointment.rs",  # not a system scope
        "",
    ):
        r = await ask(scope)
        assert r.status_code == 400 and r.json()["error"] == "invalid_scope", scope
    # v1 .read is v2 .rs: within system/Appointment.rs
    assert (await ask("system/Appointment.read")).status_code == 200


async def test_client_secret_basic_client_credentials(
    auth_server: AuthServer, http: httpx.AsyncClient
) -> None:
    r = await http.post(
        auth_server.token_url,
        data={"grant_type": "client_credentials", "scope": "system/Slot.rs"},
        auth=("admin-service", "s3cret-admin"),
    )
    assert r.status_code == 200
    # a public/authorization-code client may not use client_credentials
    r = await http.post(
        auth_server.token_url,
        data={"grant_type": "client_credentials", "scope": "system/Slot.rs"},
        auth=("conf-app", "s3cret-conf"),
    )
    assert r.status_code == 400 and r.json()["error"] == "unauthorized_client"


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, dict[str, object]]]:
    """A JWKS served over HTTP on loopback (a client's jwks_uri)."""
    doc: dict[str, object] = {"keys": []}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(doc).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", doc
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


async def test_jwks_uri_client_with_key_rotation(
    auth_server: AuthServer, http: httpx.AsyncClient, jwks_server: tuple[str, dict[str, object]]
) -> None:
    srv = auth_server
    uri, doc = jwks_server
    key1 = new_ec_key("k1")
    doc["keys"] = public_jwks(key1)["keys"]
    cid = f"jwks-uri-{uuid.uuid4().hex[:6]}"
    srv.auth.add_client(
        {
            "client_id": cid,
            "type": "confidential-asymmetric",
            "jwks_uri": uri,
            "scope": "system/*.rs",
        }
    )
    r = await token_request(
        http, srv, assertion(key1, cid, srv.token_url, alg="ES384"), "system/Slot.rs"
    )
    assert r.status_code == 200, r.text
    # the client rotates its key: an unknown kid makes the server re-fetch the JWKS
    key2 = new_rsa_key("k2")
    doc["keys"] = public_jwks(key1, key2)["keys"]
    fetcher = srv.auth.core.jwks_fetcher
    fetcher.refetch, saved = 0.0, fetcher.refetch
    try:
        r = await token_request(http, srv, assertion(key2, cid, srv.token_url), "system/Slot.rs")
        assert r.status_code == 200, r.text
    finally:
        fetcher.refetch = saved
