"""Where the authorization server lives, and how it describes itself.

The FHIR base is `settings.base_url()` (e.g. `http://127.0.0.1:8080/fhir`); the OAuth
endpoints sit beside it under `/auth` on the same origin (`http://127.0.0.1:8080/auth/...`).
The FHIR base URL is the issuer (`iss`) of every token and the only accepted `aud`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhirserver.config import Settings

AUTH_PREFIX = "/auth"
ASSERTION_ALGS = ("RS384", "ES384")

CAPABILITIES = (
    "launch-ehr",
    "launch-standalone",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "context-ehr-patient",
    "context-standalone-patient",
    "permission-offline",
    "permission-online",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
    "sso-openid-connect",
)

SCOPES_SUPPORTED = (
    "openid",
    "fhirUser",
    "launch",
    "launch/patient",
    "offline_access",
    "online_access",
    "patient/*.rs",
    "patient/*.cruds",
    "user/*.rs",
    "user/*.cruds",
    "system/*.rs",
    "system/*.cruds",
    "patient/*.read",
    "patient/*.write",
    "user/*.read",
    "user/*.write",
    "system/*.read",
    "system/*.write",
    "fhirserver:admin",
    "fhirserver:launch",
)


def auth_base_url(settings: Settings) -> str:
    """Origin of the FHIR base plus /auth (a path prefix before base_path is kept)."""
    base = settings.base_url()
    if settings.base_path and base.endswith(settings.base_path):
        root = base[: -len(settings.base_path)]
    else:
        root = base
    return root.rstrip("/") + AUTH_PREFIX


@dataclass(frozen=True)
class AuthUrls:
    """Absolute URLs of the FHIR base and every auth endpoint."""

    fhir_base: str
    auth_base: str

    @classmethod
    def from_settings(cls, settings: Settings) -> AuthUrls:
        return cls(settings.base_url().rstrip("/"), auth_base_url(settings))

    @property
    def issuer(self) -> str:
        return self.fhir_base

    @property
    def authorize(self) -> str:
        return f"{self.auth_base}/authorize"

    @property
    def token(self) -> str:
        return f"{self.auth_base}/token"

    @property
    def introspect(self) -> str:
        return f"{self.auth_base}/introspect"

    @property
    def revoke(self) -> str:
        return f"{self.auth_base}/revoke"

    @property
    def jwks(self) -> str:
        return f"{self.auth_base}/jwks"

    @property
    def launch(self) -> str:
        return f"{self.auth_base}/launch"

    @property
    def clients(self) -> str:
        return f"{self.auth_base}/clients"

    def is_fhir_base(self, aud: str | None) -> bool:
        """`aud` names this FHIR server (a trailing slash is tolerated)."""
        return bool(aud) and (aud or "").rstrip("/") == self.fhir_base


def smart_configuration(urls: AuthUrls) -> dict[str, Any]:
    """`/.well-known/smart-configuration` (SMART App Launch 2.x)."""
    return {
        "issuer": urls.issuer,
        "jwks_uri": urls.jwks,
        "authorization_endpoint": urls.authorize,
        "token_endpoint": urls.token,
        "introspection_endpoint": urls.introspect,
        "revocation_endpoint": urls.revoke,
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "scopes_supported": list(SCOPES_SUPPORTED),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGS),
        "capabilities": list(CAPABILITIES),
    }


def openid_configuration(urls: AuthUrls) -> dict[str, Any]:
    """`/.well-known/openid-configuration`: what an OIDC relying party needs for id_tokens."""
    return {
        "issuer": urls.issuer,
        "jwks_uri": urls.jwks,
        "authorization_endpoint": urls.authorize,
        "token_endpoint": urls.token,
        "introspection_endpoint": urls.introspect,
        "revocation_endpoint": urls.revoke,
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "fhirUser", "profile"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "fhirUser"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGS),
    }


def capability_security(settings: Settings) -> dict[str, Any]:
    """CapabilityStatement.rest.security: SMART service and the oauth-uris extension."""
    urls = AuthUrls.from_settings(settings)
    return {
        "extension": [
            {
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [
                    {"url": "authorize", "valueUri": urls.authorize},
                    {"url": "token", "valueUri": urls.token},
                    {"url": "introspect", "valueUri": urls.introspect},
                    {"url": "revoke", "valueUri": urls.revoke},
                ],
            }
        ],
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    }
                ],
                "text": "OAuth2 using SMART-on-FHIR profile (see .well-known/smart-configuration)",
            }
        ],
        "description": "SMART App Launch 2.x and SMART Backend Services.",
    }
