"""Discovery: .well-known/smart-configuration, OpenID configuration, JWKS, CapabilityStatement."""

from __future__ import annotations

import httpx

from tests.auth.conftest import AuthServer


async def test_smart_configuration(auth_server: AuthServer, http: httpx.AsyncClient) -> None:
    r = await http.get(f"{auth_server.fhir_base}/.well-known/smart-configuration")
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "*"
    conf = r.json()
    a = auth_server.auth_base
    assert conf["issuer"] == auth_server.fhir_base
    assert conf["authorization_endpoint"] == f"{a}/authorize"
    assert conf["token_endpoint"] == f"{a}/token"
    assert conf["introspection_endpoint"] == f"{a}/introspect"
    assert conf["revocation_endpoint"] == f"{a}/revoke"
    assert conf["jwks_uri"] == f"{a}/jwks"
    assert conf["code_challenge_methods_supported"] == ["S256"]
    assert set(conf["grant_types_supported"]) == {
        "authorization_code",
        "refresh_token",
        "client_credentials",
    }
    assert conf["response_types_supported"] == ["code"]
    assert set(conf["token_endpoint_auth_methods_supported"]) == {
        "private_key_jwt",
        "client_secret_basic",
    }
    assert set(conf["token_endpoint_auth_signing_alg_values_supported"]) == {"RS384", "ES384"}
    assert {
        "launch-ehr",
        "launch-standalone",
        "client-public",
        "client-confidential-symmetric",
        "client-confidential-asymmetric",
        "context-ehr-patient",
        "context-standalone-patient",
        "permission-offline",
        "permission-patient",
        "permission-user",
        "permission-v1",
        "permission-v2",
        "sso-openid-connect",
    } <= set(conf["capabilities"])
    assert "patient/*.rs" in conf["scopes_supported"]
    oidc = (await http.get(f"{auth_server.fhir_base}/.well-known/openid-configuration")).json()
    assert oidc["issuer"] == conf["issuer"] and oidc["jwks_uri"] == conf["jwks_uri"]


async def test_jwks_publishes_signing_keys(
    auth_server: AuthServer, http: httpx.AsyncClient
) -> None:
    jwks = (await http.get(f"{auth_server.auth_base}/jwks")).json()
    assert jwks["keys"]
    for key in jwks["keys"]:
        assert key["kty"] == "RSA" and key["kid"] and key["alg"] == "RS256"
        assert "d" not in key and "p" not in key


async def test_capability_statement_has_oauth_uris(
    auth_server: AuthServer, http: httpx.AsyncClient
) -> None:
    cs = (await http.get(f"{auth_server.fhir_base}/metadata")).json()
    security = cs["rest"][0]["security"]
    ext = next(
        e
        for e in security["extension"]
        if e["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    )
    uris = {e["url"]: e["valueUri"] for e in ext["extension"]}
    assert uris["authorize"] == f"{auth_server.auth_base}/authorize"
    assert uris["token"] == f"{auth_server.auth_base}/token"
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"


async def test_fhir_api_demands_a_token(
    auth_server: AuthServer, http: httpx.AsyncClient
) -> None:
    """The FHIR API answers 401 with a Bearer challenge when no token is sent."""
    r = await http.get(f"{auth_server.fhir_base}/Patient/auth-pat-1")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
