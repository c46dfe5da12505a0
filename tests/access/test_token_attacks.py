"""Security regressions at the FHIR API: forged, foreign and downgraded tokens get 401."""

from __future__ import annotations

import base64
import json

import httpx

from fhirserver.config import Settings
from tests.api.conftest import free_port
from tests.auth.conftest import AuthServer
from tests.auth.helpers import SEEDER, SEEDER_SECRET, client_token_sync, unverified_claims
from tests.thread_server import serve_in_thread


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


async def _status(base: str, token: str, path: str = "/Patient?_count=1") -> int:
    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        return (await c.get(path, headers={"Authorization": f"Bearer {token}"})).status_code


async def test_tampered_and_unsigned_tokens_refused(auth_server: AuthServer) -> None:
    srv = auth_server
    token = client_token_sync(srv.auth_base, SEEDER, SEEDER_SECRET, "system/Patient.r")
    assert await _status(srv.fhir_base, token) == 403  # .r does not search
    head, _, sig = token.split(".")
    claims = unverified_claims(token)
    claims["scope"] = "system/*.cruds"  # escalate, keep the signature
    assert await _status(srv.fhir_base, f"{head}.{_b64(claims)}.{sig}") == 401
    none_head = _b64({"alg": "none", "typ": "at+jwt"})
    assert await _status(srv.fhir_base, f"{none_head}.{_b64(claims)}.") == 401
    hs_head = _b64({"alg": "HS256", "typ": "at+jwt", "kid": json.loads(
        base64.urlsafe_b64decode(head + "==").decode())["kid"]})
    assert await _status(srv.fhir_base, f"{hs_head}.{_b64(claims)}.{sig}") == 401


async def test_token_of_server_a_refused_by_server_b(auth_server: AuthServer) -> None:
    """Same database and signing keys, another FHIR base: `aud`/`iss` must stop the replay."""
    srv = auth_server
    token = client_token_sync(srv.auth_base, SEEDER, SEEDER_SECRET, "system/*.rs")
    assert await _status(srv.fhir_base, token) == 200
    port = free_port()
    other = Settings(
        mongodb_uri=srv.settings.mongodb_uri, redis_url=srv.settings.redis_url,
        db_name=srv.settings.db_name, port=port, demo=False, auth_required=True,
    )
    with serve_in_thread(other):
        base_b = other.base_url()
        assert base_b != srv.fhir_base
        assert await _status(base_b, token) == 401
        own = client_token_sync(base_b.rsplit("/fhir", 1)[0] + "/auth", SEEDER, SEEDER_SECRET,
                                "system/*.rs")
        assert await _status(base_b, own) == 200
