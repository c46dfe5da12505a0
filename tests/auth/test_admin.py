"""Client administration (API and CLI), signing-key rotation, demo credentials."""

from __future__ import annotations

import io
import uuid
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from fhirserver.auth.demo import DEMO_CLIENT_ID, demo_banner, ensure_demo_credentials
from fhirserver.cli import main
from fhirserver.storage.embedded import EmbeddedServers
from tests.auth.conftest import AuthServer
from tests.auth.helpers import (
    ASSERTION_TYPE,
    CONFIDENTIAL,
    CONFIDENTIAL_SECRET,
    assertion,
    new_rsa_key,
    public_jwks,
    unverified_claims,
)


async def admin_token(http: httpx.AsyncClient, srv: AuthServer, scope: str) -> str:
    r = await http.post(
        srv.token_url,
        data={"grant_type": "client_credentials", "scope": scope},
        auth=("admin-service", "s3cret-admin"),
    )
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


async def test_register_client_via_api(auth_server: AuthServer, http: httpx.AsyncClient) -> None:
    srv = auth_server
    url = f"{srv.auth_base}/clients"
    key = new_rsa_key("api-1")
    cid = f"api-backend-{uuid.uuid4().hex[:6]}"
    spec: dict[str, Any] = {
        "client_id": cid,
        "type": "confidential-asymmetric",
        "jwks": public_jwks(key),
        "scope": "system/Slot.rs",
    }
    assert (await http.post(url, json=spec)).status_code == 401
    weak = await admin_token(http, srv, "system/*.rs")
    r = await http.post(url, json=spec, headers={"Authorization": f"Bearer {weak}"})
    assert r.status_code == 403 and r.json()["error"] == "insufficient_scope"

    token = await admin_token(http, srv, "fhirserver:admin")
    auth = {"Authorization": f"Bearer {token}"}
    r = await http.post(url, json=spec, headers=auth)
    assert r.status_code == 201, r.text
    assert r.json()["token_endpoint_auth_method"] == "private_key_jwt"
    assert r.json()["grant_types"] == ["client_credentials"]
    assert (await http.post(url, json=spec, headers=auth)).status_code == 409
    # the new client can get a token at once
    form = {
        "grant_type": "client_credentials",
        "scope": "system/Slot.rs",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion(key, cid, srv.token_url),
    }
    assert (await http.post(srv.token_url, data=form)).status_code == 200
    listed = (await http.get(url, headers=auth)).json()
    assert cid in {c["client_id"] for c in listed}
    assert all("secret_hash" not in c for c in listed)
    assert (await http.get(f"{url}/{cid}", headers=auth)).json()["scope"] == "system/Slot.rs"
    assert (await http.delete(f"{url}/{cid}", headers=auth)).status_code == 204
    assert (await http.get(f"{url}/{cid}", headers=auth)).status_code == 404
    form["client_assertion"] = assertion(key, cid, srv.token_url)
    r = await http.post(srv.token_url, data=form)
    assert r.status_code == 400 and r.json()["error"] == "invalid_client"


async def test_register_symmetric_client_returns_secret_once(
    auth_server: AuthServer, http: httpx.AsyncClient
) -> None:
    srv = auth_server
    srv.auth.add_client(
        {
            "client_id": "super-service",
            "type": "confidential-symmetric",
            "client_secret": "s3cret-super",
            "scope": "system/*.*",
            "grant_types": ["client_credentials"],
        }
    )
    r = await http.post(
        srv.token_url,
        data={"grant_type": "client_credentials", "scope": "system/*.*"},
        auth=("super-service", "s3cret-super"),
    )
    token = r.json()["access_token"]
    cid = f"api-app-{uuid.uuid4().hex[:6]}"
    r = await http.post(
        f"{srv.auth_base}/clients",
        json={
            "client_id": cid,
            "type": "confidential-symmetric",
            "redirect_uris": ["https://app.example/cb"],
            "scope": "openid fhirUser patient/*.rs",
        },
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 201, r.text
    secret = r.json()["client_secret"]
    assert len(secret) >= 32
    stored = srv.auth.store.clients.find_one({"_id": cid})
    assert stored is not None and secret not in str(stored)  # only the scrypt hash is kept
    assert srv.auth.store.get_client(cid).check_client_secret(secret)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "spec",
    [
        {"client_id": "x", "type": "public", "scope": "openid", "redirect_uris": ["https://a/cb"]},
        {"client_id": "bad-type", "type": "secret", "scope": "openid"},
        {"client_id": "no-redirect", "type": "public", "scope": "openid"},
        {
            "client_id": "http-redirect",
            "type": "public",
            "scope": "openid",
            "redirect_uris": ["http://app.example/cb"],
        },
        {
            "client_id": "bad-scope",
            "type": "public",
            "scope": "patient/X.zz",
            "redirect_uris": ["https://a/cb"],
        },
        {"client_id": "no-keys", "type": "confidential-asymmetric", "scope": "system/*.rs"},
        {
            "client_id": "oct-key",
            "type": "confidential-asymmetric",
            "scope": "system/*.rs",
            "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ", "kid": "o"}]},
        },
        {
            "client_id": "extra",
            "type": "public",
            "scope": "openid",
            "redirect_uris": ["https://a/cb"],
            "unknown": 1,
        },
    ],
)
async def test_invalid_client_specs(
    auth_server: AuthServer, http: httpx.AsyncClient, spec: dict[str, Any]
) -> None:
    token = await admin_token(http, auth_server, "fhirserver:admin")
    r = await http.post(
        f"{auth_server.auth_base}/clients", json=spec, headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 400, (spec, r.text)
    assert r.json()["error"] == "invalid_client_metadata"


async def test_signing_key_rotation(auth_server: AuthServer, http: httpx.AsyncClient) -> None:
    srv = auth_server

    async def token() -> str:
        r = await http.post(
            srv.token_url,
            data={"grant_type": "client_credentials", "scope": "system/Slot.rs"},
            auth=("admin-service", "s3cret-admin"),
        )
        value: str = r.json()["access_token"]
        return value

    async def active(tok: str) -> bool:
        r = await http.post(
            f"{srv.auth_base}/introspect",
            data={"token": tok},
            auth=("admin-service", "s3cret-admin"),
        )
        return bool(r.json()["active"])

    old = await token()
    old_kid = unverified_header(old)["kid"]
    new_kid = srv.auth.rotate_signing_key()
    jwks = (await http.get(f"{srv.auth_base}/jwks")).json()
    assert {old_kid, new_kid} <= {k["kid"] for k in jwks["keys"]}
    new = await token()
    assert unverified_header(new)["kid"] == new_kid
    assert await active(old) and await active(new)  # the previous key still verifies
    srv.auth.rotate_signing_key()  # the oldest key is retired now
    kids = {k["kid"] for k in (await http.get(f"{srv.auth_base}/jwks")).json()["keys"]}
    assert old_kid not in kids and new_kid in kids
    assert not await active(old) and await active(new)


def unverified_header(token: str) -> dict[str, Any]:
    import base64
    import json

    head = token.split(".")[0]
    return dict(json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))))


async def test_demo_credentials(auth_server: AuthServer, http: httpx.AsyncClient) -> None:
    srv = auth_server
    creds = ensure_demo_credentials(srv.auth)
    assert ensure_demo_credentials(srv.auth) == creds  # idempotent, same secrets
    banner = demo_banner(creds)
    assert creds["client_secret"] in banner and DEMO_CLIENT_ID in banner
    for user in creds["users"]:
        assert user["username"] in banner and user["password"] in banner
    r = await http.post(
        srv.token_url,
        data={"grant_type": "client_credentials", "scope": "system/*.rs"},
        auth=(DEMO_CLIENT_ID, creds["client_secret"]),
    )
    assert r.status_code == 200, r.text
    assert unverified_claims(r.json()["access_token"])["scope"] == "system/*.rs"


def test_cli_client_user_keys(
    embedded: EmbeddedServers,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Any,
) -> None:
    db = f"auth_cli_{uuid.uuid4().hex[:8]}"
    assert embedded.mongodb_uri
    monkeypatch.setenv("MONGODB_URI", embedded.mongodb_uri)
    monkeypatch.setenv("FHIRSERVER_DB_NAME", db)
    key = new_rsa_key("cli-1")
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(__import__("json").dumps(public_jwks(key)))
    assert (
        main(
            [
                "client",
                "add",
                "--id",
                "cli-backend",
                "--type",
                "confidential-asymmetric",
                "--scope",
                "system/*.rs",
                "--jwks-file",
                str(jwks_file),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "client",
                "add",
                "--id",
                "cli-app",
                "--type",
                "confidential-symmetric",
                "--redirect-uri",
                "https://app.example/cb",
                "--scope",
                "openid patient/*.rs",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert '"client_secret"' in out and "private_key_jwt" in out
    assert main(["client", "add", "--id", "x", "--type", "public", "--scope", "openid"]) == 1
    monkeypatch.setattr("sys.stdin", io.StringIO("long enough password\n"))
    assert main(["user", "add", "--username", "nurse", "--role", "staff", "--password-stdin",
                 "--organization", "Organization/o1"]) == 0
    assert main(["keys", "rotate-signing"]) == 0
    assert main(["keys", "rotate-signing"]) == 0
    mongo: MongoClient[dict[str, Any]] = MongoClient(embedded.mongodb_uri)
    try:
        d = mongo[db]
        assert d["auth_clients"].count_documents({}) == 2
        user = d["auth_users"].find_one({"_id": "nurse"})
        assert user is not None and user["password_hash"].startswith("scrypt$")
        statuses = sorted(k["status"] for k in d["auth_keys"].find())
        assert statuses == ["current", "previous"]  # two rotations: both keys published
    finally:
        mongo.drop_database(db)
        mongo.close()


def test_confidential_secret_constant(auth_server: AuthServer) -> None:
    client = auth_server.auth.store.get_client(CONFIDENTIAL)
    assert client is not None and client.check_client_secret(CONFIDENTIAL_SECRET)
    assert not client.check_client_secret("wrong")


def test_plain_http_public_url_refused(embedded: EmbeddedServers) -> None:
    """authlib refuses OAuth over http off loopback: a clear error, not a 500."""
    import redis

    from fhirserver.auth.service import AuthService
    from fhirserver.config import Settings
    from fhirserver.scheduling.clock import SystemClock

    assert embedded.mongodb_uri and embedded.redis_url
    settings = Settings(public_base_url="http://fhir.example.org/fhir", db_name="auth_insecure")
    mongo: MongoClient[dict[str, Any]] = MongoClient(embedded.mongodb_uri)
    service = AuthService(settings, mongo, redis.Redis.from_url(embedded.redis_url), SystemClock())
    try:
        r = service.token({}, [("grant_type", "client_credentials")])
        assert r.status == 400 and r.body["error"] == "insecure_transport"
        page = service.authorize([("response_type", "code")], {}, None, None)
        assert page.page == "error" and "https" in page.data["message"]
    finally:
        service.close()
