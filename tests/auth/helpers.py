"""Helpers for driving the authorization server like a SMART app and its user would."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

CONFIDENTIAL = "conf-app"
CONFIDENTIAL_SECRET = "s3cret-conf"
PUBLIC = "public-app"
REDIRECT = "http://127.0.0.1:9/callback"
PASSWORD = "correct horse battery"
SEEDER, SEEDER_SECRET = "seeder", "s3cret-seeder"  # a backend service with system/*.cruds
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def pkce() -> tuple[str, str]:
    """(verifier, S256 challenge)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).decode().rstrip("=")


def new_rsa_key(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid})


def new_ec_key(kid: str) -> ECKey:
    return ECKey.generate_key("P-384", parameters={"kid": kid})


def public_jwks(*keys: Any) -> dict[str, Any]:
    return {"keys": [k.as_dict(private=False) for k in keys]}


def assertion(
    key: Any,
    client_id: str,
    aud: str,
    *,
    alg: str = "RS384",
    exp_in: int = 240,
    jti: str | None = None,
    kid: str | None = None,
    **claims: Any,
) -> str:
    """A SMART Backend Services client assertion."""
    now = int(time.time())
    body = {
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "exp": now + exp_in,
        "jti": uuid.uuid4().hex if jti is None else jti,
        **claims,
    }
    if body["jti"] == "":
        del body["jti"]
    header = {"alg": alg, "typ": "JWT", "kid": kid or key.kid}
    return jwt.encode(header, body, key, algorithms=[alg])


def b64url_json(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unverified_claims(token: str) -> dict[str, Any]:
    import json

    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def hidden(html: str, name: str) -> str:
    m = re.search(rf'name={name} value="([^"]*)"', html)
    assert m, f"no hidden {name} in page: {html[:500]}"
    return m.group(1)


@dataclass
class AuthRequestParams:
    """The query of one authorization request."""

    client_id: str
    scope: str
    aud: str
    redirect_uri: str = REDIRECT
    state: str = field(default_factory=lambda: secrets.token_urlsafe(8))
    verifier: str = ""
    challenge: str = ""
    method: str | None = "S256"
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.verifier:
            self.verifier, self.challenge = pkce()

    def query(self) -> dict[str, str]:
        q = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": self.scope,
            "state": self.state,
            "aud": self.aud,
        }
        if self.challenge:
            q["code_challenge"] = self.challenge
        if self.method:
            q["code_challenge_method"] = self.method
        q.update(self.extra)
        return q


async def start(
    http: httpx.AsyncClient, auth_base: str, params: AuthRequestParams
) -> httpx.Response:
    return await http.get(f"{auth_base}/authorize?{urlencode(params.query())}")


def absolute(auth_base: str, location: str) -> str:
    if location.startswith("http"):
        return location
    root = auth_base.rsplit("/auth", 1)[0]
    return root + location


async def login(
    http: httpx.AsyncClient, auth_base: str, login_url: str, username: str, password: str
) -> httpx.Response:
    page = await http.get(absolute(auth_base, login_url))
    assert page.status_code == 200, page.text
    assert "<form" in page.text
    return await http.post(
        f"{auth_base}/login",
        data={
            "req": hidden(page.text, "req"),
            "csrf": hidden(page.text, "csrf"),
            "username": username,
            "password": password,
        },
    )


async def pick(
    http: httpx.AsyncClient, auth_base: str, picker_url: str, patient: str
) -> httpx.Response:
    page = await http.get(absolute(auth_base, picker_url))
    assert page.status_code == 200, page.text
    assert f'value="{patient}"' in page.text, page.text
    return await http.post(
        f"{auth_base}/picker",
        data={
            "req": hidden(page.text, "req"),
            "csrf": hidden(page.text, "csrf"),
            "patient": patient,
        },
    )


async def consent(
    http: httpx.AsyncClient,
    auth_base: str,
    consent_url: str,
    *,
    uncheck: tuple[str, ...] = (),
    check: tuple[str, ...] = (),
    decision: str = "allow",
) -> tuple[httpx.Response, str]:
    """Answer the consent page: the checked scopes minus `uncheck`, plus the offered
    narrower ones in `check`; returns (the response, the page html)."""
    page = await http.get(absolute(auth_base, consent_url))
    assert page.status_code == 200, page.text
    checked = re.findall(r'name=scope value="([^"]*)" checked', page.text)
    offered = re.findall(r'name=scope value="([^"]*)">', page.text)
    assert set(check) <= set(offered), (check, offered)
    form: dict[str, str | list[str]] = {
        "req": hidden(page.text, "req"),
        "csrf": hidden(page.text, "csrf"),
        "decision": decision,
        "scope": [s for s in checked if s not in uncheck] + list(check),
    }
    return await http.post(f"{auth_base}/consent", data=form), page.text


async def authorize(
    http: httpx.AsyncClient,
    auth_base: str,
    params: AuthRequestParams,
    *,
    username: str,
    password: str = PASSWORD,
    patient: str | None = None,
    uncheck: tuple[str, ...] = (),
    check: tuple[str, ...] = (),
) -> dict[str, str]:
    """authorize -> login -> (picker) -> consent; the query the client's redirect_uri gets."""
    r = await start(http, auth_base, params)
    assert r.status_code == 302, r.text
    location = r.headers["location"]
    if "/auth/login" in location:
        r = await login(http, auth_base, location, username, password)
        assert r.status_code == 303, r.text
        location = r.headers["location"]
    if "/auth/picker" in location:
        assert patient is not None, "picker shown but no patient to pick"
        r = await pick(http, auth_base, location, patient)
        assert r.status_code == 303, r.text
        location = r.headers["location"]
    assert "/auth/consent" in location, location
    r, _ = await consent(http, auth_base, location, uncheck=uncheck, check=check)
    assert r.status_code == 303, r.text
    final = r.headers["location"]
    assert final.startswith(params.redirect_uri), final
    return query_of(final)


async def exchange(
    http: httpx.AsyncClient,
    token_url: str,
    code: str,
    params: AuthRequestParams,
    *,
    secret: str | None = CONFIDENTIAL_SECRET,
    verifier: str | None = None,
    redirect_uri: str | None = None,
) -> httpx.Response:
    """The token request for an authorization code."""
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri or params.redirect_uri,
    }
    if verifier != "":
        data["code_verifier"] = verifier or params.verifier
    auth = (params.client_id, secret) if secret else None
    if auth is None:
        data["client_id"] = params.client_id
    return await http.post(token_url, data=data, auth=auth)


def client_token_sync(auth_base: str, client_id: str, secret: str, scope: str) -> str:
    """A backend-service access token (client_credentials, client_secret_basic)."""
    r = httpx.post(f"{auth_base}/token", auth=(client_id, secret),
                   data={"grant_type": "client_credentials", "scope": scope}, timeout=30)
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


async def user_token(
    http: httpx.AsyncClient, auth_base: str, fhir_base: str, username: str, scope: str,
    patient: str | None = None,
) -> str:
    """An access token for a user of the confidential app: authorize -> login ->
    (picker) -> consent -> token."""
    params = AuthRequestParams(client_id=CONFIDENTIAL, scope=scope, aud=fhir_base)
    query = await authorize(http, auth_base, params, username=username, patient=patient)
    r = await exchange(http, f"{auth_base}/token", query["code"], params)
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token
