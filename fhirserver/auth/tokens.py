"""Minting and checking tokens: JWT access tokens, opaque refresh tokens, OIDC id_tokens.

An access token is a JWT signed with the server's current key (RS256, `kid` header) and
recorded in `auth_tokens` under its `jti`, with the launch context (patient, encounter),
`fhirUser`, scope and client. Everything the token response, the JWT and introspection
say comes from that one record, written *before* the response leaves: context cannot
be added to the response without also reaching introspection. A resource server can
verify the JWT offline against the JWKS; `verify_access` additionally refuses revoked
tokens.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError

from fhirserver.auth.keys import SIGNING_ALG, KeyRing
from fhirserver.auth.models import Client, TokenRecord, User
from fhirserver.auth.scopes import ScopeError, Scopes
from fhirserver.auth.smart import AuthUrls
from fhirserver.auth.store import AuthStore

Doc = dict[str, Any]


@dataclass(frozen=True)
class TokenLifetimes:
    """Seconds each kind of credential lives."""

    access: int = 3600
    refresh: int = 90 * 24 * 3600
    code: int = 120
    id_token: int = 3600


@dataclass(frozen=True)
class Grant:
    """Everything needed to issue tokens for one authorization."""

    client: Client
    scope: Scopes
    grant_type: str
    grant_id: str
    user: User | None = None
    context: Doc | None = None
    refresh: bool = False
    session_id: str | None = None
    auth_time: int | None = None
    nonce: str | None = None


def new_grant_id() -> str:
    return secrets.token_urlsafe(16)


class TokenService:
    """Issues, verifies, introspects and revokes tokens."""

    def __init__(
        self,
        store: AuthStore,
        keys: KeyRing,
        urls: AuthUrls,
        now: Callable[[], int],
        lifetimes: TokenLifetimes,
    ) -> None:
        self.store = store
        self.keys = keys
        self.urls = urls
        self.now = now
        self.lifetimes = lifetimes

    # ---- issuing --------------------------------------------------------------

    def fhir_user_url(self, user: User | None) -> str | None:
        """The absolute URL of the user's FHIR resource (SMART `fhirUser`)."""
        if user is None or not user.fhir_user:
            return None
        return f"{self.urls.fhir_base}/{user.fhir_user}"

    def issue(self, grant: Grant) -> Doc:
        """Record and sign a new access token (plus refresh and id tokens); the response body."""
        now = self.now()
        jti = secrets.token_urlsafe(24)
        context = {k: v for k, v in (grant.context or {}).items() if v is not None}
        fhir_user = self.fhir_user_url(grant.user) if "fhirUser" in grant.scope else None
        refresh_token = secrets.token_urlsafe(48) if grant.refresh else None
        refresh_exp: int | None = None
        if refresh_token is not None:
            refresh_exp = now + self.lifetimes.refresh
            if "offline_access" not in grant.scope and grant.session_id:
                # online_access: lives with the user's login session.
                session = self.store.sessions.find_one({"_id": grant.session_id}, {"exp": 1})
                refresh_exp = min(refresh_exp, session["exp"]) if session else now
        record = TokenRecord(
            jti=jti,
            grant_id=grant.grant_id,
            client_id=grant.client.client_id,
            scope=str(grant.scope),
            grant_type=grant.grant_type,
            issued_at=now,
            expires_at=now + self.lifetimes.access,
            user_id=grant.user.username if grant.user else None,
            context=context,
            refresh_expires_at=refresh_exp,
            session_id=grant.session_id,
            auth_time=grant.auth_time,
            fhir_user=fhir_user,
        )
        self.store.save_token(record, refresh_token)
        body: Doc = {
            "access_token": self._sign(self.access_claims(record)),
            "token_type": "Bearer",
            "expires_in": self.lifetimes.access,
            "scope": record.scope,
        }
        if refresh_token is not None:
            body["refresh_token"] = refresh_token
        if "patient" in context:
            body["patient"] = context["patient"]
        if "encounter" in context:
            body["encounter"] = context["encounter"]
        if "need_patient_banner" in context:
            body["need_patient_banner"] = context["need_patient_banner"]
        if fhir_user:
            body["fhirUser"] = fhir_user
        if "openid" in grant.scope and grant.user is not None:
            body["id_token"] = self._id_token(grant, record, fhir_user)
        return body

    def access_claims(self, record: TokenRecord) -> Doc:
        """The JWT claims of an access token (also most of its introspection answer)."""
        claims: Doc = {
            "iss": self.urls.issuer,
            "aud": self.urls.fhir_base,
            "sub": record.user_id or record.client_id,
            "client_id": record.client_id,
            "scope": record.scope,
            "iat": record.issued_at,
            "exp": record.expires_at,
            "jti": record.jti,
        }
        for name in ("patient", "encounter"):
            if name in record.context:
                claims[name] = record.context[name]
        if record.fhir_user:
            claims["fhirUser"] = record.fhir_user
        return claims

    def _id_token(self, grant: Grant, record: TokenRecord, fhir_user: str | None) -> str:
        assert grant.user is not None
        claims: Doc = {
            "iss": self.urls.issuer,
            "sub": grant.user.username,
            "aud": grant.client.client_id,
            "iat": record.issued_at,
            "exp": record.issued_at + self.lifetimes.id_token,
        }
        if grant.auth_time is not None:
            claims["auth_time"] = grant.auth_time
        if grant.nonce:
            claims["nonce"] = grant.nonce
        if fhir_user:
            claims["fhirUser"] = fhir_user
        if "profile" in grant.scope and grant.user.name:
            claims["name"] = grant.user.name
        return self._sign(claims, typ="JWT")

    def _sign(self, claims: Doc, typ: str = "at+jwt") -> str:
        kid, key = self.keys.signing_key()
        header = {"alg": SIGNING_ALG, "kid": kid, "typ": typ}
        return jwt.encode(header, claims, key, algorithms=[SIGNING_ALG])

    # ---- checking -------------------------------------------------------------

    def decode_access(self, token: str) -> Doc | None:
        """The verified claims of one of our JWTs (signature, iss, aud), or None. Expiry
        and revocation are not checked here."""
        if not isinstance(token, str) or token.count(".") != 2 or len(token) > 8192:
            return None
        try:
            header = jws.extract_compact(token.encode("ascii")).headers()
            key = self.keys.verification_key(header.get("kid"))
            if key is None:
                return None
            claims = jwt.decode(token, key, algorithms=[SIGNING_ALG]).claims
        except (JoseError, ValueError, UnicodeError):
            return None
        if claims.get("iss") != self.urls.issuer or claims.get("aud") != self.urls.fhir_base:
            return None
        return claims

    def verify_access(self, token: str) -> TokenRecord | None:
        """The record of an active access token (valid signature, not expired or revoked)."""
        claims = self.decode_access(token)
        if claims is None or not isinstance(claims.get("jti"), str):
            return None
        record = self.store.get_token(claims["jti"])
        if record is None or record.revoked or record.expires_at <= self.now():
            return None
        return record

    def lookup(self, token: str) -> TokenView | None:
        """Any of our tokens, access (JWT) or refresh (opaque), for introspection/revocation."""
        if not isinstance(token, str) or not token or len(token) > 8192:
            return None
        claims = self.decode_access(token)
        if claims is not None:
            record = self.store.get_token(str(claims.get("jti")))
            if record is None:
                return None
            return TokenView(self, record, "access_token")
        record = self.store.find_refresh(token)
        if record is None:
            return None
        return TokenView(self, record, "refresh_token")

    def revoke(self, view: TokenView) -> None:
        """Revoking an access token ends it; revoking a refresh token ends its whole grant."""
        if view.kind == "access_token":
            self.store.revoke_access(view.record.jti)
        else:
            self.store.revoke_grant(view.record.grant_id)


class TokenView:
    """A stored token as authlib's introspection and revocation endpoints see it."""

    def __init__(self, tokens: TokenService, record: TokenRecord, kind: str) -> None:
        self.tokens = tokens
        self.record = record
        self.kind = kind

    def check_client(self, client: Client) -> bool:
        return self.record.client_id == client.client_id

    def get_scope(self) -> str:
        return self.record.scope

    def is_expired(self) -> bool:
        now = self.tokens.now()
        if self.kind == "access_token":
            return self.record.expires_at <= now
        exp = self.record.refresh_expires_at
        if exp is None or exp <= now:
            return True
        if "offline_access" not in self.record.scope and self.record.session_id:
            return not self.tokens.store.session_alive(self.record.session_id, now)
        return False

    def is_revoked(self) -> bool:
        if self.kind == "access_token":
            return self.record.revoked
        return self.record.refresh_revoked

    def introspection(self) -> Doc:
        """RFC 7662 claims plus SMART's patient/fhirUser context."""
        claims = self.tokens.access_claims(self.record)
        claims["active"] = True
        claims["token_type"] = "Bearer" if self.kind == "access_token" else "refresh_token"
        if self.record.user_id:
            claims["username"] = self.record.user_id
        if self.kind == "refresh_token" and self.record.refresh_expires_at:
            claims["exp"] = self.record.refresh_expires_at
        return claims


def scopes_or_none(scope: str | None) -> Scopes | None:
    """Parse, None when malformed."""
    try:
        return Scopes.parse(scope)
    except ScopeError:
        return None
