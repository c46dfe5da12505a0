"""authlib's AuthorizationServer, configured and corrected for SMART App Launch 2.x.

authlib has no FastAPI integration, and its server is synchronous. `AuthRequest` is the
small framework-neutral request adapter (method, URL, headers, query and form pairs);
`AuthResponse` is what comes back. The API layer builds the former from a Starlette
request and calls into this module from a worker thread (see store.py for why).

Where stock authlib 1.9 does not do what SMART requires, the subclasses below override it;
each override has a test in tests/auth/:

- PKCE: authlib allows and defaults to `plain`, and requires a verifier only from public
  clients. `S256CodeChallenge` accepts S256 only, always, from every client.
- `aud`: ignored by authlib; `SmartAuthorizationCodeGrant` requires the FHIR base URL.
- JWT client auth: authlib names it `client_assertion_jwt` and decodes with the
  "recommended" algorithms only, which leaves out RS384. `PrivateKeyJWT` registers as
  `private_key_jwt`, accepts exactly RS384 and ES384, caps `exp` at 5 minutes ahead and
  records every `jti` in Redis (SET NX with expiry) so a replay is refused.
- Refresh: authlib issues no new refresh token by default and compares scopes as
  strings. `SmartRefreshTokenGrant` rotates (new refresh token, old one refused, reuse
  of a rotated token revokes the whole grant) and uses `Scopes.covers`, so `.read` and
  `.rs` are the same grant and a refresh may only narrow.
- client_credentials: authlib returns whatever scope was asked for.
  `SmartClientCredentialsGrant` refuses anything beyond the client's pre-authorized scopes.
- Context: the launch context is part of the stored token record *before* the token is
  issued (tokens.py), so introspection reports it.
- Introspection: unknown, expired, revoked or foreign tokens answer 200 `{"active": false}`;
  unknown `token_type_hint` values are ignored rather than refused.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import redis
from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    OAuth2Payload,
    OAuth2Request,
)
from authlib.oauth2.rfc6749.grants import (
    AuthorizationCodeGrant,
    ClientCredentialsGrant,
    RefreshTokenGrant,
)
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7636.challenge import compare_s256_code_challenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from fhirserver.auth.models import AuthCode, Client, Consent, LaunchContext, TokenRecord, User
from fhirserver.auth.scopes import ADMIN_SCOPE, LAUNCH_API_SCOPE, ScopeError, Scopes
from fhirserver.auth.smart import ASSERTION_ALGS, AuthUrls
from fhirserver.auth.store import AuthStore
from fhirserver.auth.tokens import Grant, TokenLifetimes, TokenService, TokenView, new_grant_id

Doc = dict[str, Any]
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_AUTH_METHODS = ["client_secret_basic", "private_key_jwt", "none"]


def describe(text: str) -> str:
    """An error_description authlib accepts (printable ASCII without quote or backslash)."""
    return "".join(c for c in text if 0x20 <= ord(c) <= 0x7E and c not in '"\\')[:300]


# ---- request / response adapter -------------------------------------------------


class _Headers(dict[str, str]):
    """Case-insensitive header lookup, as authlib expects from `request.headers`."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        super().__init__({k.lower(): v for k, v in headers.items()})

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())


class _Payload(OAuth2Payload):  # type: ignore[misc]
    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._datalist: defaultdict[str, list[str]] = defaultdict(list)
        for k, v in pairs:
            self._datalist[k].append(v)
        self._data = {k: v[0] for k, v in self._datalist.items()}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class AuthRequest(OAuth2Request):  # type: ignore[misc]
    """A framework-neutral HTTP request for authlib.

    Authorization requests carry their parameters in `query`, token-endpoint requests in
    `form`; each only reads its own (query parameters on a token POST are ignored).
    """

    def __init__(
        self,
        method: str,
        uri: str,
        headers: Mapping[str, str] | None = None,
        query: Iterable[tuple[str, str]] = (),
        form: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(method, uri, headers=_Headers(headers or {}))
        query, form = list(query), list(form)
        self._args = {k: v for k, v in reversed(query)}
        self._form = {k: v for k, v in reversed(form)}
        self.payload = _Payload(query if method == "GET" else form)
        self.launch: LaunchContext | None = None

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


@dataclass
class AuthResponse:
    """An HTTP answer from the auth server: JSON body (dict), text, or a redirect."""

    status: int
    body: Any
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def location(self) -> str | None:
        for k, v in self.headers:
            if k.lower() == "location":
                return v
        return None


# ---- shared state the grants need ------------------------------------------------


@dataclass
class AuthCore:
    """Storage, token service, URLs and clock, shared by the server, grants and endpoints."""

    store: AuthStore
    tokens: TokenService
    urls: AuthUrls
    now: Callable[[], int]
    redis: redis.Redis
    lifetimes: TokenLifetimes
    jwks_fetcher: JwksFetcher
    redis_prefix: str = "fhirserver:auth"

    def client_keys(self, client: Client, kid: str | None) -> KeySet:
        """The client's public keys: registered JWKS, or fetched from its jwks_uri."""
        if client.jwks:
            return KeySet.import_key_set(client.jwks)  # type: ignore[arg-type]
        if client.jwks_uri:
            jwks = self.jwks_fetcher.get(client.jwks_uri)
            keyset = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
            if kid and all(k.kid != kid for k in keyset):
                keyset = KeySet.import_key_set(self.jwks_fetcher.get(client.jwks_uri, force=True))  # type: ignore[arg-type]
            return keyset
        raise InvalidClientError(description="the client has no registered keys")

    def remember_jti(self, client_id: str, jti: str, ttl: int) -> bool:
        """Record a client assertion's jti; False when it was seen before (a replay)."""
        digest = hashlib.sha256(f"{client_id}\x00{jti}".encode()).hexdigest()
        key = f"{self.redis_prefix}:jti:{digest}"
        return bool(self.redis.set(key, b"1", nx=True, ex=max(ttl, 1)))


class JwksFetcher:
    """Fetches and caches clients' jwks_uri documents (https, or http on loopback only)."""

    MAX_BYTES = 64 * 1024

    def __init__(self, ttl: float = 300.0, timeout: float = 5.0, refetch: float = 10.0) -> None:
        self.ttl = ttl
        self.timeout = timeout
        self.refetch = refetch
        self._cache: dict[str, tuple[float, Doc]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def allowed(uri: str) -> bool:
        parts = urlsplit(uri)
        if parts.scheme == "https" and parts.hostname:
            return True
        if parts.scheme != "http" or not parts.hostname:
            return False
        if parts.hostname == "localhost":
            return True
        try:
            return ipaddress.ip_address(parts.hostname).is_loopback
        except ValueError:
            return False

    def get(self, uri: str, force: bool = False) -> Doc:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(uri)
        if cached and not force and now - cached[0] < self.ttl:
            return cached[1]
        if cached and force and now - cached[0] < self.refetch:
            return cached[1]  # unknown kids re-fetch at most once per `refetch` seconds
        if not self.allowed(uri):
            raise InvalidClientError(description="jwks_uri must be https")
        try:
            req = urllib.request.Request(uri, headers={"Accept": "application/json"})
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read(self.MAX_BYTES + 1)
            if len(raw) > self.MAX_BYTES:
                raise ValueError("JWKS too large")
            doc = json.loads(raw)
            if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
                raise ValueError("not a JWKS")
        except (OSError, ValueError) as exc:
            raise InvalidClientError(description="could not fetch the client jwks_uri") from exc
        with self._lock:
            self._cache[uri] = (now, doc)
        return doc


# ---- PKCE: S256 only, every client -------------------------------------------------


class S256CodeChallenge(CodeChallenge):  # type: ignore[misc]
    """PKCE as SMART requires: a S256 challenge on every authorization request, and its
    verifier on every token request, confidential clients included."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    CODE_CHALLENGE_METHODS = {"S256": compare_s256_code_challenge}

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: missing code_challenge")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256")
        super().validate_code_challenge(grant, redirect_uri)

    def validate_code_verifier(self, grant: Any, result: Any) -> None:
        if not grant.request.form.get("code_verifier"):
            raise InvalidRequestError("Missing code_verifier")
        code = grant.request.authorization_code
        if code.code_challenge_method != "S256" or not code.code_challenge:
            raise InvalidGrantError("the code was not issued with a S256 challenge")
        super().validate_code_verifier(grant, result)


# ---- private_key_jwt ------------------------------------------------------------------


class PrivateKeyJWT(JWTBearerClientAssertion):  # type: ignore[misc]
    """SMART Backend Services client authentication (RFC 7523 `private_key_jwt`)."""

    CLIENT_AUTH_METHOD = "private_key_jwt"
    MAX_LIFETIME = 300  # exp at most 5 minutes ahead...
    CLOCK_SKEW = 30  # ...give or take this much clock difference

    def __init__(self, core: AuthCore) -> None:
        super().__init__(validate_jti=True, leeway=self.CLOCK_SKEW)
        self.core = core

    def __call__(self, query_client: Callable[[str], Client | None], request: Any) -> Any:
        data = request.form
        assertion = data.get("client_assertion")
        if data.get("client_assertion_type") != ASSERTION_TYPE or not assertion:
            return None
        headers, unverified = self.extract_assertion(assertion)
        if headers.get("alg") not in ASSERTION_ALGS:
            raise InvalidClientError(description="client_assertion must be signed RS384 or ES384")
        client_id = unverified.get("sub")
        if not isinstance(client_id, str):
            raise InvalidClientError(description="client_assertion has no sub")
        form_client = data.get("client_id")
        if form_client is not None and form_client != client_id:
            raise InvalidClientError(description="client_id does not match the assertion")
        client = query_client(client_id)
        if client is None or client.auth_method != self.CLIENT_AUTH_METHOD:
            raise InvalidClientError(description="unknown client or not a private_key_jwt client")
        keys = self.core.client_keys(client, headers.get("kid"))
        try:
            key: Any = keys
            members = list(keys)
            if not headers.get("kid") and len(members) == 1:
                key = members[0]
            claims = jwt.decode(assertion, key, algorithms=list(ASSERTION_ALGS)).claims
        except (JoseError, ValueError) as exc:
            raise InvalidClientError(description="client_assertion signature invalid") from exc
        self.check_claims(claims, client_id, {self.core.urls.token, request.uri})
        request.client = client
        return client

    def check_claims(self, claims: Doc, client_id: str, audiences: set[str]) -> None:
        """iss = sub = client, aud = token endpoint, exp soon, jti never seen before."""
        now = self.core.now()
        if claims.get("iss") != client_id or claims.get("sub") != client_id:
            raise InvalidClientError(description="iss and sub must be the client_id")
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if not any(isinstance(a, str) and a in audiences for a in auds):
            raise InvalidClientError(description="aud must be the token endpoint URL")
        exp = claims.get("exp")
        if not isinstance(exp, int) or isinstance(exp, bool):
            raise InvalidClientError(description="client_assertion needs an integer exp")
        if exp <= now - self.CLOCK_SKEW:
            raise InvalidClientError(description="client_assertion has expired")
        if exp > now + self.MAX_LIFETIME + self.CLOCK_SKEW:
            raise InvalidClientError(description="client_assertion exp is over 5 minutes ahead")
        for name in ("nbf", "iat"):
            value = claims.get(name)
            if value is not None and (not isinstance(value, int) or value > now + self.CLOCK_SKEW):
                raise InvalidClientError(description=f"client_assertion {name} is in the future")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > 256:
            raise InvalidClientError(description="client_assertion needs a jti")
        if not self.core.remember_jti(client_id, jti, exp - now + self.CLOCK_SKEW):
            raise InvalidClientError(description="client_assertion jti was already used")


# ---- grants ---------------------------------------------------------------------------


def _core(grant: Any) -> AuthCore:
    core: AuthCore = grant.server.core
    return core


class SmartAuthorizationCodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]
    """Authorization code with SMART's `aud` and `launch` checks and context-bearing codes."""

    TOKEN_ENDPOINT_AUTH_METHODS = TOKEN_AUTH_METHODS

    def validate_authorization_request(self) -> str:
        if not self.request.payload.data.get("redirect_uri"):
            raise InvalidRequestError("redirect_uri is required")
        redirect_uri: str = super().validate_authorization_request()
        try:
            self._validate_smart()
        except OAuth2Error as error:
            error.redirect_uri = redirect_uri
            raise
        return redirect_uri

    def _validate_smart(self) -> None:
        core = _core(self)
        data = self.request.payload.data
        if not core.urls.is_fhir_base(data.get("aud")):
            raise InvalidRequestError("aud must be this server's FHIR base URL")
        scope = Scopes.parse(self.request.scope)
        launch_id = data.get("launch")
        if launch_id:
            launch = core.store.get_launch(launch_id, core.now())
            if launch is None:
                raise InvalidRequestError("unknown or expired launch")
            if launch.client_id and launch.client_id != self.request.client.client_id:
                raise InvalidRequestError("this launch was created for another client")
            if "launch" not in scope:
                raise InvalidScopeError("an EHR launch needs the launch scope")
            self.request.launch = launch
        elif "launch" in scope:
            raise InvalidRequestError("the launch scope needs a launch parameter (EHR launch)")

    def save_authorization_code(self, code: str, request: AuthRequest) -> None:
        core = _core(self)
        consent: Consent = request.user
        data = request.payload.data
        core.store.save_code(
            code,
            AuthCode(
                client_id=request.client.client_id,
                redirect_uri=data["redirect_uri"],
                scope=consent.scope,
                user_id=consent.user.username,
                context=consent.context,
                code_challenge=data["code_challenge"],
                code_challenge_method=data["code_challenge_method"],
                grant_id=new_grant_id(),
                expires_at=core.now() + core.lifetimes.code,
                auth_time=consent.auth_time,
                nonce=data.get("nonce"),
                session_id=consent.session_id,
            ),
        )

    def query_authorization_code(self, code: str, client: Client) -> AuthCode | None:
        """Redeem (single use): a second redemption revokes what the first one got."""
        core = _core(self)
        doc, reused = core.store.redeem_code(code, client.client_id)
        if doc is None:
            return None
        if reused:
            core.store.revoke_grant(doc["grant_id"])
            return None
        if doc["exp"] <= core.now():
            return None
        return AuthCode(
            client_id=doc["client_id"],
            redirect_uri=doc["redirect_uri"],
            scope=doc["scope"],
            user_id=doc["user_id"],
            context=dict(doc.get("context") or {}),
            code_challenge=doc["code_challenge"],
            code_challenge_method=doc["code_challenge_method"],
            grant_id=doc["grant_id"],
            expires_at=doc["exp"],
            auth_time=doc["auth_time"],
            nonce=doc.get("nonce"),
            session_id=doc.get("session_id"),
        )

    def delete_authorization_code(self, authorization_code: AuthCode) -> None:
        """Nothing to do: redeeming already consumed it."""

    def authenticate_user(self, authorization_code: AuthCode) -> User | None:
        user = _core(self).store.get_user(authorization_code.user_id)
        return user if user is not None and not user.disabled else None

    def create_token_response(self) -> tuple[int, Doc, list[tuple[str, str]]]:
        client: Client = self.request.client
        code: AuthCode = self.request.authorization_code
        user = self.authenticate_user(code)
        if user is None:
            raise InvalidGrantError("the user of this code no longer exists")
        scope = Scopes.parse(code.scope)
        refresh = client.check_grant_type("refresh_token") and (
            "offline_access" in scope or "online_access" in scope
        )
        body = _core(self).tokens.issue(
            Grant(
                client=client,
                scope=scope,
                grant_type=self.GRANT_TYPE,
                grant_id=code.grant_id,
                user=user,
                context=code.context,
                refresh=refresh,
                session_id=code.session_id,
                auth_time=code.auth_time,
                nonce=code.nonce,
            )
        )
        return 200, body, self.TOKEN_RESPONSE_HEADER


class SmartRefreshTokenGrant(RefreshTokenGrant):  # type: ignore[misc]
    """Refresh with rotation and SMART scope semantics (narrow only)."""

    TOKEN_ENDPOINT_AUTH_METHODS = TOKEN_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> TokenRecord | None:
        core = _core(self)
        record = core.store.find_refresh(refresh_token)
        if record is None:
            return None
        if record.refresh_revoked:
            if record.rotated:
                # A rotated-away refresh token came back: someone holds a copy. End the grant.
                core.store.revoke_grant(record.grant_id)
            return None
        if TokenView(core.tokens, record, "refresh_token").is_expired():
            return None
        return record

    def _validate_token_scope(self, token: TokenRecord) -> None:
        scope = self.request.payload.scope
        if not scope:
            return
        try:
            requested = Scopes.parse(scope)
        except ScopeError as exc:
            raise InvalidScopeError(describe(str(exc))) from exc
        if not Scopes.parse(token.scope).covers(requested):
            raise InvalidScopeError("a refresh may narrow the scope, never widen it")

    def authenticate_user(self, refresh_token: TokenRecord) -> User | None:
        if refresh_token.user_id is None:
            return None
        user = _core(self).store.get_user(refresh_token.user_id)
        return user if user is not None and not user.disabled else None

    def create_token_response(self) -> tuple[int, Doc, list[tuple[str, str]]]:
        core = _core(self)
        record: TokenRecord = self.request.refresh_token
        user = self.authenticate_user(record)
        if record.user_id is not None and user is None:
            raise InvalidGrantError("the user of this grant no longer exists")
        if not core.store.rotate_refresh(record.jti):
            raise InvalidGrantError("refresh token already used")
        requested = self.request.payload.scope
        scope = Scopes.parse(requested or record.scope)
        refresh = "offline_access" in scope or "online_access" in scope
        body = core.tokens.issue(
            Grant(
                client=self.request.client,
                scope=scope,
                grant_type=self.GRANT_TYPE,
                grant_id=record.grant_id,
                user=user,
                context=record.context,
                refresh=refresh,
                session_id=record.session_id,
                auth_time=record.auth_time,
            )
        )
        return 200, body, self.TOKEN_RESPONSE_HEADER


SYSTEM_OTHER_SCOPES = frozenset({ADMIN_SCOPE, LAUNCH_API_SCOPE})


class SmartClientCredentialsGrant(ClientCredentialsGrant):  # type: ignore[misc]
    """SMART Backend Services: system scopes within the client's pre-authorized ones."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "private_key_jwt"]

    def validate_token_request(self) -> None:
        super().validate_token_request()
        scope = self.request.payload.scope
        if not scope:
            raise InvalidScopeError("scope is required")
        requested = Scopes.parse(scope)
        if requested.contexts - {"system"} or requested.others - SYSTEM_OTHER_SCOPES:
            raise InvalidScopeError("client_credentials grants system/ scopes only")
        client: Client = self.request.client
        if not client.allowed.covers(requested):
            raise InvalidScopeError("scope is beyond what this client is pre-authorized for")

    def create_token_response(self) -> tuple[int, Doc, list[tuple[str, str]]]:
        body = _core(self).tokens.issue(
            Grant(
                client=self.request.client,
                scope=Scopes.parse(self.request.payload.scope),
                grant_type=self.GRANT_TYPE,
                grant_id=new_grant_id(),
            )
        )
        return 200, body, self.TOKEN_RESPONSE_HEADER


# ---- introspection and revocation ------------------------------------------------------


class SmartIntrospectionEndpoint(IntrospectionEndpoint):  # type: ignore[misc]
    """RFC 7662 for our tokens: a client introspects its own (resource servers: any)."""

    CLIENT_AUTH_METHODS = TOKEN_AUTH_METHODS

    def check_params(self, request: AuthRequest, client: Client) -> None:
        if not request.form.get("token"):
            raise InvalidRequestError("token is required")

    def query_token(self, token_string: str, token_type_hint: str | None) -> TokenView | None:
        return _core(self).tokens.lookup(token_string)

    def check_permission(self, token: TokenView, client: Client, request: AuthRequest) -> bool:
        return token.check_client(client) or client.introspect_any

    def introspect_token(self, token: TokenView) -> Doc:
        return token.introspection()


class SmartRevocationEndpoint(RevocationEndpoint):  # type: ignore[misc]
    """RFC 7009: unknown tokens and other clients' tokens are a silent no-op (200)."""

    CLIENT_AUTH_METHODS = TOKEN_AUTH_METHODS

    def check_params(self, request: AuthRequest, client: Client) -> None:
        if not request.form.get("token"):
            raise InvalidRequestError("token is required")

    def authenticate_token(self, request: AuthRequest, client: Client) -> TokenView | None:
        self.check_params(request, client)
        token = self.query_token(request.form["token"], request.form.get("token_type_hint"))
        return token if token is not None and token.check_client(client) else None

    def query_token(self, token_string: str, token_type_hint: str | None) -> TokenView | None:
        return _core(self).tokens.lookup(token_string)

    def revoke_token(self, token: TokenView, request: AuthRequest) -> None:
        _core(self).tokens.revoke(token)


# ---- the server -------------------------------------------------------------------------


class SmartAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    """authlib's server wired to our storage, grants and endpoints."""

    def __init__(self, core: AuthCore) -> None:
        super().__init__(scopes_supported=None)
        self.core = core
        self.register_client_auth_method("private_key_jwt", PrivateKeyJWT(core))
        self.register_grant(SmartAuthorizationCodeGrant, [S256CodeChallenge(required=True)])
        self.register_grant(SmartRefreshTokenGrant)
        self.register_grant(SmartClientCredentialsGrant)
        self.register_endpoint(SmartIntrospectionEndpoint)
        self.register_endpoint(SmartRevocationEndpoint)

    def query_client(self, client_id: str) -> Client | None:
        return self.core.store.get_client(client_id)

    def save_token(self, token: Doc, request: AuthRequest) -> None:
        raise NotImplementedError("tokens are recorded by TokenService.issue")

    def create_oauth2_request(self, request: Any) -> AuthRequest:
        if not isinstance(request, AuthRequest):
            raise TypeError("expected an AuthRequest")
        return request

    def create_json_request(self, request: Any) -> Any:
        raise NotImplementedError

    def handle_response(self, status: int, body: Any, headers: Any) -> AuthResponse:
        return AuthResponse(status, body, [(str(k), str(v)) for k, v in headers])

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """No signal bus here."""

    def validate_requested_scope(self, scope: str | None) -> None:
        if scope:
            try:
                Scopes.parse(scope)
            except ScopeError as exc:
                raise InvalidScopeError(describe(str(exc))) from exc

    # ---- entry points used by the service ----

    def token(self, request: AuthRequest) -> AuthResponse:
        response: AuthResponse = self.create_token_response(request)
        return response

    def introspect(self, request: AuthRequest) -> AuthResponse:
        response: AuthResponse = self.create_endpoint_response("introspection", request)
        return response

    def revoke(self, request: AuthRequest) -> AuthResponse:
        response: AuthResponse = self.create_endpoint_response("revocation", request)
        return response
