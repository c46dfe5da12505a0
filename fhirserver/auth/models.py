"""What the authorization server stores: clients, users, codes, tokens, launches.

Each model maps to one Mongo document (`to_doc`/`from_doc`) and implements the authlib
mixin methods its grants call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fhirserver.auth.passwords import verify_password
from fhirserver.auth.scopes import ScopeError, Scopes

Doc = dict[str, Any]

CLIENT_TYPES = ("public", "confidential-symmetric", "confidential-asymmetric")
AUTH_METHODS = {
    "public": "none",
    "confidential-symmetric": "client_secret_basic",
    "confidential-asymmetric": "private_key_jwt",
}
ROLES = ("patient", "practitioner", "staff", "auditor")


@dataclass
class Client:
    """A registered OAuth client (a SMART app, an EHR, a backend service)."""

    client_id: str
    type: str
    scope: str
    redirect_uris: list[str] = field(default_factory=list)
    grant_types: list[str] = field(default_factory=list)
    name: str = ""
    secret_hash: str | None = None
    jwks: Doc | None = None
    jwks_uri: str | None = None
    # May introspect every token, not only its own (a resource server).
    introspect_any: bool = False

    @property
    def auth_method(self) -> str:
        """How the client authenticates at the token endpoint."""
        return AUTH_METHODS[self.type]

    @property
    def allowed(self) -> Scopes:
        """The scopes this client is pre-authorized for."""
        return Scopes.parse(self.scope)

    # ---- authlib ClientMixin ------------------------------------------------

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        # SMART requires redirect_uri on every request: no default.
        return None

    def get_allowed_scope(self, scope: str | None) -> str | None:
        """The requested scopes narrowed to what this client may have; None when nothing."""
        if not scope:
            return None
        try:
            narrowed = Scopes.parse(scope).narrowed_to(self.allowed)
        except ScopeError:
            return None
        return str(narrowed) if narrowed else None

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        """Exact string match against a registered URI."""
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return self.secret_hash is not None and verify_password(client_secret, self.secret_hash)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and "authorization_code" in self.grant_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types

    # ---- storage ------------------------------------------------------------

    def to_doc(self) -> Doc:
        return {
            "_id": self.client_id,
            "type": self.type,
            "scope": self.scope,
            "redirect_uris": self.redirect_uris,
            "grant_types": self.grant_types,
            "name": self.name,
            "secret_hash": self.secret_hash,
            "jwks": self.jwks,
            "jwks_uri": self.jwks_uri,
            "introspect_any": self.introspect_any,
        }

    @classmethod
    def from_doc(cls, doc: Doc) -> Client:
        return cls(
            client_id=doc["_id"],
            type=doc["type"],
            scope=doc.get("scope", ""),
            redirect_uris=list(doc.get("redirect_uris") or []),
            grant_types=list(doc.get("grant_types") or []),
            name=doc.get("name", ""),
            secret_hash=doc.get("secret_hash"),
            jwks=doc.get("jwks"),
            jwks_uri=doc.get("jwks_uri"),
            introspect_any=bool(doc.get("introspect_any", False)),
        )

    def public_view(self) -> Doc:
        """What the admin API shows (never the secret hash)."""
        doc = self.to_doc()
        doc.pop("secret_hash")
        doc["client_id"] = doc.pop("_id")
        doc["token_endpoint_auth_method"] = self.auth_method
        return {k: v for k, v in doc.items() if v is not None}


@dataclass
class User:
    """A person who logs in: patient, practitioner, staff or auditor."""

    username: str
    role: str
    fhir_user: str | None = None  # "Patient/123" or "Practitioner/abc"
    name: str = ""
    password_hash: str | None = None
    disabled: bool = False
    organization: str | None = None  # "Organization/x": the organization a staff user works for

    def get_user_id(self) -> str:
        return self.username

    @property
    def patient_id(self) -> str | None:
        """The Patient id a patient user is bound to."""
        if self.fhir_user and self.fhir_user.startswith("Patient/"):
            return self.fhir_user.split("/", 1)[1]
        return None

    def to_doc(self) -> Doc:
        return {
            "_id": self.username,
            "role": self.role,
            "fhir_user": self.fhir_user,
            "name": self.name,
            "password_hash": self.password_hash,
            "disabled": self.disabled,
            "organization": self.organization,
        }

    @classmethod
    def from_doc(cls, doc: Doc) -> User:
        return cls(
            username=doc["_id"],
            role=doc["role"],
            fhir_user=doc.get("fhir_user"),
            name=doc.get("name", ""),
            password_hash=doc.get("password_hash"),
            disabled=bool(doc.get("disabled", False)),
            organization=doc.get("organization"),
        )


@dataclass
class Consent:
    """What the user approved on the consent page: handed to authlib as the grant user."""

    user: User
    scope: str
    context: Doc  # patient, encounter, need_patient_banner
    session_id: str | None
    auth_time: int
    nonce: str | None = None

    def get_user_id(self) -> str:
        return self.user.username


@dataclass
class AuthCode:
    """An issued authorization code (stored by hash; single use)."""

    client_id: str
    redirect_uri: str
    scope: str
    user_id: str
    context: Doc
    code_challenge: str
    code_challenge_method: str
    grant_id: str
    expires_at: int
    auth_time: int
    nonce: str | None = None
    session_id: str | None = None

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time


@dataclass
class TokenRecord:
    """One issued access token (by jti) and its refresh token (by hash), if any."""

    jti: str
    grant_id: str
    client_id: str
    scope: str
    grant_type: str
    issued_at: int
    expires_at: int
    user_id: str | None = None
    context: Doc = field(default_factory=dict)
    revoked: bool = False
    refresh_hash: str | None = None
    refresh_expires_at: int | None = None
    refresh_revoked: bool = False
    rotated: bool = False
    session_id: str | None = None
    auth_time: int | None = None
    fhir_user: str | None = None

    # authlib TokenMixin (refresh grant + revocation)
    def check_client(self, client: Client) -> bool:
        return self.client_id == client.client_id

    def get_scope(self) -> str:
        return self.scope

    @classmethod
    def from_doc(cls, doc: Doc) -> TokenRecord:
        return cls(
            jti=doc["_id"],
            grant_id=doc["grant_id"],
            client_id=doc["client_id"],
            scope=doc["scope"],
            grant_type=doc["grant_type"],
            issued_at=doc["iat"],
            expires_at=doc["exp"],
            user_id=doc.get("user_id"),
            context=dict(doc.get("context") or {}),
            revoked=bool(doc.get("revoked", False)),
            refresh_hash=doc.get("refresh_hash"),
            refresh_expires_at=doc.get("refresh_exp"),
            refresh_revoked=bool(doc.get("refresh_revoked", False)),
            rotated=bool(doc.get("rotated", False)),
            session_id=doc.get("session_id"),
            auth_time=doc.get("auth_time"),
            fhir_user=doc.get("fhir_user"),
        )


@dataclass
class LaunchContext:
    """An EHR launch: created by the EHR, referenced by `launch=` on /authorize."""

    launch_id: str
    patient: str | None
    encounter: str | None
    created_by: str
    expires_at: int
    client_id: str | None = None
