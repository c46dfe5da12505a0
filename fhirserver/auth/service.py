"""The authorization server as the API layer sees it: one method per user-visible step.

Every method here is synchronous (authlib and the sync auth store underneath); the API
layer calls them from a worker thread. Browser steps return a `FlowResult` (a redirect,
or a page to render with its data, plus cookies to set); OAuth endpoints return authlib's
`AuthResponse`; the JSON admin APIs raise `AuthApiError`.

The interactive authorization flow:

    GET /auth/authorize?...      validated by authlib (client, redirect_uri, scope, PKCE, aud,
                                 launch), remembered as a pending request `req`
    GET/POST /auth/login         username + password -> browser session
    GET/POST /auth/picker        practitioner/staff pick the patient (standalone launch/patient);
                                 a patient user is bound to their own Patient
    GET/POST /auth/consent       the user unchecks scopes (narrowing) and allows or denies
    -> 302 redirect_uri?code=...&state=...

A pending request is bound to the browser that started it (a random cookie whose hash it
stores) and, after login, to the session; forms carry a per-request CSRF token.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from authlib.common.security import is_secure_transport
from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc6749 import OAuth2Error
from pymongo import MongoClient

from fhirserver.auth.active_tokens import TokenMemo
from fhirserver.auth.clients import ClientSpecError, build_client, read_clients_file
from fhirserver.auth.keys import KeyRing
from fhirserver.auth.models import ROLES, Client, Consent, LaunchContext, TokenRecord, User
from fhirserver.auth.passwords import hash_password, sha256_hex, verify_password
from fhirserver.auth.scopes import (
    ADMIN_SCOPE,
    LAUNCH_API_SCOPE,
    ScopeError,
    Scopes,
    narrower_options,
)
from fhirserver.auth.server import (
    AuthCore,
    AuthRequest,
    AuthResponse,
    JwksFetcher,
    SmartAuthorizationServer,
)
from fhirserver.auth.smart import AuthUrls, openid_configuration, smart_configuration
from fhirserver.auth.store import AuthStore
from fhirserver.auth.tokens import TokenLifetimes, TokenService
from fhirserver.config import Settings
from fhirserver.phi.cipher import RecordCipher
from fhirserver.phi.codec import PhiCodec
from fhirserver.scheduling.clock import Clock

log = logging.getLogger(__name__)
Doc = dict[str, Any]

BROWSER_COOKIE = "fhirserver_browser"
SESSION_COOKIE = "fhirserver_session"
PENDING_SECONDS = 15 * 60
LOGIN_FAILURES_ALLOWED = 10
LOGIN_FAILURE_WINDOW = 15 * 60

SCOPE_TEXT = {
    "openid": "Confirm your identity (OpenID Connect)",
    "fhirUser": "Know which FHIR Patient or Practitioner you are",
    "profile": "See your name",
    "launch": "Open in the context of the current EHR session",
    "launch/patient": "Know which patient is selected",
    "launch/encounter": "Know which encounter is selected",
    "offline_access": "Keep access after you log out (refresh token)",
    "online_access": "Keep access while you stay logged in (refresh token)",
    ADMIN_SCOPE: "Administer this server's OAuth clients",
    LAUNCH_API_SCOPE: "Create EHR launch contexts",
}
_CONTEXT_TEXT = {
    "patient": "the selected patient's",
    "user": "any data you can see in",
    "system": "all",
}
_PERM_TEXT = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}


def describe_scope(token: str) -> str:
    """A plain-language line for the consent page."""
    if token in SCOPE_TEXT:
        return SCOPE_TEXT[token]
    try:
        scope = Scopes.parse(token).resources[0]
    except (ScopeError, IndexError):
        return token
    verbs = ", ".join(_PERM_TEXT[p] for p in "cruds" if p in scope.permissions)
    what = "resources" if scope.resource_type == "*" else f"{scope.resource_type} resources"
    where = ""
    if scope.constraints:
        where = " where " + ", ".join(f"{k}={v}" for k, v in scope.constraints)
    return f"{verbs.capitalize()} {_CONTEXT_TEXT[scope.context]} {what}{where}"


class AuthApiError(Exception):
    """A JSON API error: status, OAuth-style error code, description."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


@dataclass
class FlowResult:
    """What a browser step answers: a redirect, or a page (name + data), plus cookies."""

    redirect: str | None = None
    page: str | None = None
    data: Doc = field(default_factory=dict)
    status: int = 200
    cookies: dict[str, str] = field(default_factory=dict)


def _error_page(message: str, status: int = 400) -> FlowResult:
    return FlowResult(page="error", data={"message": message}, status=status)


class AuthService:
    """The SMART authorization server: browser flow, OAuth endpoints, launches, clients."""

    def __init__(
        self,
        settings: Settings,
        mongo: MongoClient[Doc],
        redis_client: redis.Redis,
        clock: Clock,
        cipher: RecordCipher | None = None,
    ) -> None:
        self.settings = settings
        self.mongo = mongo
        self.redis = redis_client
        self.clock = clock
        self.urls = AuthUrls.from_settings(settings)
        # User display names are sealed with the PHI keyring (the server hands its cipher in).
        cipher = cipher or PhiCodec.from_settings(settings).cipher
        self.store = AuthStore(mongo, settings.db_name, cipher)
        self.keys = KeyRing(self.store)
        self.lifetimes = TokenLifetimes(
            access=settings.auth_access_token_seconds,
            refresh=settings.auth_refresh_token_days * 24 * 3600,
        )
        self.tokens = TokenService(self.store, self.keys, self.urls, self.now, self.lifetimes)
        # Verified Bearer tokens of FHIR requests (access/authenticate.py).
        self.verified: TokenMemo[Any] = TokenMemo(settings.auth_token_cache_seconds)
        self.store.revocation_hooks.append(self.verified.forget)
        self.prefix = f"fhirserver:{settings.db_name}:auth"
        self.core = AuthCore(
            store=self.store,
            tokens=self.tokens,
            urls=self.urls,
            now=self.now,
            redis=redis_client,
            lifetimes=self.lifetimes,
            jwks_fetcher=JwksFetcher(),
            redis_prefix=self.prefix,
        )
        self.server = SmartAuthorizationServer(self.core)
        # OAuth over plain http is refused (authlib), except on loopback.
        self.secure = is_secure_transport(self.urls.token)
        if not self.secure:
            log.warning(
                "OAuth endpoints at %s are not https: they will refuse requests "
                "(set FHIRSERVER_PUBLIC_BASE_URL to an https URL, or AUTHLIB_INSECURE_TRANSPORT=1 "
                "for development only)",
                self.urls.auth_base,
            )

    @classmethod
    def start(
        cls, settings: Settings, mongo_uri: str, redis_url: str, clock: Clock,
        cipher: RecordCipher | None = None,
    ) -> AuthService:
        """Connect (sync clients), make sure a signing key exists, load the clients file."""
        mongo: MongoClient[Doc] = MongoClient(
            mongo_uri, tz_aware=True, uuidRepresentation="standard"
        )
        service = cls(settings, mongo, redis.Redis.from_url(redis_url), clock, cipher)
        service.keys.ensure()
        if settings.clients_file:
            service.load_clients_file(Path(settings.clients_file))
        return service

    def close(self) -> None:
        self.redis.close()
        self.mongo.close()

    def now(self) -> int:
        return int(self.clock.now().timestamp())

    # ---- discovery ---------------------------------------------------------------

    def smart_configuration(self) -> Doc:
        return smart_configuration(self.urls)

    def openid_configuration(self) -> Doc:
        return openid_configuration(self.urls)

    def jwks(self) -> Doc:
        return self.keys.jwks()

    # ---- OAuth endpoints (token, introspection, revocation) -------------------------

    def _endpoint_request(
        self, uri: str, headers: Mapping[str, str], form: Iterable[tuple[str, str]]
    ) -> AuthRequest:
        return AuthRequest("POST", uri, headers, form=form)

    def _insecure(self) -> AuthResponse | None:
        if is_secure_transport(self.urls.token):
            return None
        body = {"error": "insecure_transport", "error_description": "OAuth 2 MUST utilize https."}
        return AuthResponse(400, body, [("Cache-Control", "no-store")])

    def token(self, headers: Mapping[str, str], form: Iterable[tuple[str, str]]) -> AuthResponse:
        if (refused := self._insecure()) is not None:
            return refused
        return self.server.token(self._endpoint_request(self.urls.token, headers, form))

    def introspect(
        self, headers: Mapping[str, str], form: Iterable[tuple[str, str]]
    ) -> AuthResponse:
        if (refused := self._insecure()) is not None:
            return refused
        return self.server.introspect(self._endpoint_request(self.urls.introspect, headers, form))

    def revoke(self, headers: Mapping[str, str], form: Iterable[tuple[str, str]]) -> AuthResponse:
        if (refused := self._insecure()) is not None:
            return refused
        return self.server.revoke(self._endpoint_request(self.urls.revoke, headers, form))

    # ---- the browser flow -----------------------------------------------------------

    def authorize(
        self,
        query: list[tuple[str, str]],
        headers: Mapping[str, str],
        browser: str | None,
        session_token: str | None,
    ) -> FlowResult:
        """Validate an authorization request; continue to login, picker or consent."""
        if self._insecure() is not None:
            return _error_page("This server's OAuth endpoints need https.")
        cookies: dict[str, str] = {}
        if not browser:
            browser = secrets.token_urlsafe(24)
            cookies[BROWSER_COOKIE] = browser
        request = AuthRequest("GET", self.urls.authorize, headers, query=query)
        try:
            self.server.get_consent_grant(request, end_user=None)
        except OAuth2Error as error:
            response = self.server.handle_error_response(request, error)
            if response.location:
                return FlowResult(redirect=response.location, cookies=cookies)
            return _error_page(error.description or error.error or "invalid request")
        now = self.now()
        pending: Doc = {
            "_id": secrets.token_urlsafe(24),
            "params": [list(p) for p in query],
            "client_id": request.client.client_id,
            "client_name": request.client.name or request.client.client_id,
            "scope": request.scope,
            "launch": None,
            "patient": None,
            "browser": sha256_hex(browser),
            "session": None,
            "csrf": secrets.token_urlsafe(24),
            "exp": now + PENDING_SECONDS,
        }
        if request.launch is not None:
            pending["launch"] = {
                "patient": request.launch.patient,
                "encounter": request.launch.encounter,
            }
        session = self.store.get_session(session_token, now)
        user = self.store.get_user(session["user_id"]) if session else None
        if session and user and not user.disabled:
            pending["session"] = session["_id"]
        self.store.save_request(pending)
        if pending["session"] is None:
            return FlowResult(redirect=self._page_url("login", pending), cookies=cookies)
        assert user is not None
        result = self._next(pending, user)
        result.cookies.update(cookies)
        return result

    def _page_url(self, page: str, pending: Doc) -> str:
        return f"{self.urls.auth_base}/{page}?req={pending['_id']}"

    def _pending(
        self, req_id: str, browser: str | None, session_token: str | None, need_session: bool
    ) -> tuple[Doc, User | None, Doc | None] | FlowResult:
        now = self.now()
        pending = self.store.get_request(req_id, now)
        if pending is None:
            return _error_page(
                "This sign-in request is unknown or has expired. Start again from the app."
            )
        if not browser or sha256_hex(browser) != pending["browser"]:
            return _error_page("This sign-in request was started in another browser.", 403)
        if not need_session:
            return pending, None, None
        session = self.store.get_session(session_token, now)
        if session is None or session["_id"] != pending["session"]:
            return FlowResult(redirect=self._page_url("login", pending))
        user = self.store.get_user(session["user_id"])
        if user is None or user.disabled:
            return FlowResult(redirect=self._page_url("login", pending))
        return pending, user, session

    def _deny(self, pending: Doc, description: str) -> FlowResult:
        """Send the browser back to the client with error=access_denied."""
        self.store.take_request(pending["_id"])
        params = dict(pending["params"])
        out = [("error", "access_denied"), ("error_description", description)]
        if params.get("state"):
            out.append(("state", params["state"]))
        return FlowResult(redirect=add_params_to_uri(params["redirect_uri"], out))

    def _next(self, pending: Doc, user: User) -> FlowResult:
        """After login: bind the patient context, or ask for one, then consent."""
        scope = Scopes.parse(pending["scope"])
        launch = pending.get("launch") or {}
        if user.role == "patient":
            own = user.patient_id
            if own is None:
                return self._deny(pending, "this patient account is not linked to a Patient")
            if launch.get("patient") and launch["patient"] != own:
                return self._deny(pending, "a patient may only launch with their own record")
            if "launch/patient" in scope or "patient" in scope.contexts:
                self.store.update_request(pending["_id"], {"patient": own})
        elif "launch/patient" in scope and not launch.get("patient") and not pending["patient"]:
            return FlowResult(redirect=self._page_url("picker", pending))
        return FlowResult(redirect=self._page_url("consent", pending))

    def login_page(self, req_id: str, browser: str | None) -> FlowResult:
        found = self._pending(req_id, browser, None, need_session=False)
        if isinstance(found, FlowResult):
            return found
        pending = found[0]
        return FlowResult(page="login", data=self._page_data(pending))

    def _page_data(self, pending: Doc) -> Doc:
        return {
            "req": pending["_id"],
            "csrf": pending["csrf"],
            "client_name": pending["client_name"],
            "client_id": pending["client_id"],
        }

    def login(
        self, req_id: str, browser: str | None, csrf: str, username: str, password: str
    ) -> FlowResult:
        """Check the password; on success open a session and go on."""
        found = self._pending(req_id, browser, None, need_session=False)
        if isinstance(found, FlowResult):
            return found
        pending = found[0]
        if not secrets.compare_digest(csrf.encode(), pending["csrf"].encode()):
            return _error_page("The form has expired; start again from the app.")
        data = {**self._page_data(pending), "username": username}
        throttle_key = f"{self.prefix}:login:{sha256_hex(username.lower())}"
        failures = int(self.redis.get(throttle_key) or 0)
        if failures >= LOGIN_FAILURES_ALLOWED:
            data["error"] = "Too many failed attempts. Try again in a few minutes."
            return FlowResult(page="login", data=data, status=429)
        user = self.store.get_user(username)
        valid = verify_password(password, user.password_hash if user else None)
        if user is None or not valid or user.disabled:
            pipe = self.redis.pipeline()
            pipe.incr(throttle_key)
            pipe.expire(throttle_key, LOGIN_FAILURE_WINDOW)
            pipe.execute()
            data["error"] = "Unknown username or wrong password."
            return FlowResult(page="login", data=data, status=401)
        self.redis.delete(throttle_key)
        token = secrets.token_urlsafe(32)
        now = self.now()
        sid = self.store.create_session(
            token, user.username, now, now + self.settings.auth_session_minutes * 60
        )
        pending["session"] = sid
        self.store.update_request(pending["_id"], {"session": sid})
        result = self._next(pending, user)
        result.cookies[SESSION_COOKIE] = token
        return result

    def picker(self, req_id: str, browser: str | None, session_token: str | None) -> FlowResult:
        """The patient picker page (its patient list is filled by the caller)."""
        found = self._pending(req_id, browser, session_token, need_session=True)
        if isinstance(found, FlowResult):
            return found
        pending, user, _ = found
        assert user is not None
        if user.role == "patient":
            return FlowResult(redirect=self._page_url("consent", pending))
        return FlowResult(page="picker", data={**self._page_data(pending), "user": user.name})

    def pending_user(
        self, req_id: str, browser: str | None, session_token: str | None
    ) -> User | None:
        """The signed-in user of a pending authorization request (None: no valid session),
        for the picker's list of the patients that user may pick."""
        found = self._pending(req_id, browser, session_token, need_session=True)
        return None if isinstance(found, FlowResult) else found[1]

    def choose_patient(
        self,
        req_id: str,
        browser: str | None,
        session_token: str | None,
        csrf: str,
        patient_id: str,
        patient_exists: bool,
    ) -> FlowResult:
        """Record the picked patient, then consent."""
        found = self._pending(req_id, browser, session_token, need_session=True)
        if isinstance(found, FlowResult):
            return found
        pending, user, _ = found
        assert user is not None
        if not secrets.compare_digest(csrf.encode(), pending["csrf"].encode()):
            return _error_page("The form has expired; start again from the app.")
        if user.role == "patient":
            return _error_page("Patients cannot pick another patient.", 403)
        if pending.get("launch"):
            return _error_page("This launch already has its patient.", 400)
        if not patient_exists:  # unknown, or not one of the user's patients
            data = {**self._page_data(pending), "error": "Pick a patient from the list."}
            return FlowResult(page="picker", data=data, status=400)
        self.store.update_request(pending["_id"], {"patient": patient_id})
        return FlowResult(redirect=self._page_url("consent", pending))

    def consent_page(
        self, req_id: str, browser: str | None, session_token: str | None
    ) -> FlowResult:
        """The consent page: every requested scope, checked, with a description."""
        found = self._pending(req_id, browser, session_token, need_session=True)
        if isinstance(found, FlowResult):
            return found
        pending, user, _ = found
        assert user is not None
        needs_patient = "launch/patient" in Scopes.parse(pending["scope"])
        launch = pending.get("launch") or {}
        patient = launch.get("patient") or pending.get("patient")
        if needs_patient and not patient and user.role != "patient":
            return FlowResult(redirect=self._page_url("picker", pending))
        requested = Scopes.parse(pending["scope"])
        scopes = [(t, describe_scope(t)) for t in requested.tokens]
        data = {
            **self._page_data(pending),
            "user": user.name or user.username,
            "scopes": scopes,
            "narrower": [(t, describe_scope(t)) for t in narrower_options(requested)],
            "patient_id": patient,
        }
        return FlowResult(page="consent", data=data)

    def consent(
        self,
        req_id: str,
        browser: str | None,
        session_token: str | None,
        csrf: str,
        approve: bool,
        chosen: list[str],
    ) -> FlowResult:
        """Allow (with the checked scopes) or deny; either way back to the client."""
        found = self._pending(req_id, browser, session_token, need_session=True)
        if isinstance(found, FlowResult):
            return found
        pending, user, session = found
        assert user is not None and session is not None
        if not secrets.compare_digest(csrf.encode(), pending["csrf"].encode()):
            return _error_page("The form has expired; start again from the app.")
        if not approve:
            return self._deny(pending, "the user denied access")
        requested = Scopes.parse(pending["scope"])
        try:
            # Requested scopes in their order, then narrower ones the user chose instead.
            granted = Scopes.parse(
                [t for t in requested.tokens if t in set(chosen)]
                + [t for t in chosen if t not in requested.tokens]
            )
        except ScopeError:
            return _error_page("Invalid scope selection.")
        if not requested.covers(granted):
            return _error_page("Only requested scopes, or narrower ones, can be granted.")
        if not granted:
            return self._deny(pending, "the user granted no scope")
        if self._insecure() is not None:
            return _error_page("This server's OAuth endpoints need https.")
        if self.store.take_request(pending["_id"]) is None:
            return _error_page("This request was already answered.")
        request = AuthRequest("GET", self.urls.authorize, {}, query=map(tuple, pending["params"]))
        try:
            grant = self.server.get_consent_grant(request, end_user=None)
        except OAuth2Error as error:
            response = self.server.handle_error_response(request, error)
            if response.location:
                return FlowResult(redirect=response.location)
            return _error_page(error.description or error.error or "invalid request")
        context: Doc = {}
        launch = pending.get("launch")
        if launch and "launch" in granted:
            context = {
                "patient": launch.get("patient"),
                "encounter": launch.get("encounter"),
                "need_patient_banner": False,
            }
        elif pending.get("patient") and ("launch/patient" in granted or user.role == "patient"):
            context = {"patient": pending["patient"], "need_patient_banner": True}
        consent = Consent(
            user=user,
            scope=str(granted),
            context={k: v for k, v in context.items() if v is not None},
            session_id=session["_id"],
            auth_time=int(session.get("auth_time", self.now())),
            nonce=dict(pending["params"]).get("nonce"),
        )
        response = self.server.create_authorization_response(
            request, grant_user=consent, grant=grant
        )
        if response.location:
            return FlowResult(redirect=response.location)
        return _error_page("Could not complete the authorization.")

    def logout(self, session_token: str | None) -> None:
        if session_token:
            self.store.end_session(session_token)

    # ---- bearer-protected JSON APIs (launch, clients) ---------------------------------

    def bearer(self, authorization: str | None) -> TokenRecord:
        """The active access token in an `Authorization: Bearer` header, or 401."""
        if not authorization or not authorization.lower().startswith("bearer "):
            raise AuthApiError(401, "invalid_token", "a Bearer access token is required")
        record = self.tokens.verify_access(authorization[7:].strip())
        if record is None:
            raise AuthApiError(401, "invalid_token", "the access token is invalid or expired")
        return record

    def _require_admin(self, record: TokenRecord) -> None:
        scope = Scopes.parse(record.scope)
        if ADMIN_SCOPE not in scope and not scope.is_superuser():
            raise AuthApiError(403, "insufficient_scope", f"needs {ADMIN_SCOPE} or system/*.*")

    def create_launch(
        self,
        record: TokenRecord,
        patient: str | None,
        encounter: str | None,
        client_id: str | None,
    ) -> Doc:
        """A new EHR launch context (the caller has checked that the patient exists)."""
        scope = Scopes.parse(record.scope)
        if not ({LAUNCH_API_SCOPE, ADMIN_SCOPE} & scope.others or scope.is_superuser()):
            raise AuthApiError(403, "insufficient_scope", f"needs {LAUNCH_API_SCOPE}")
        if record.user_id:
            user = self.store.get_user(record.user_id)
            if user is None or user.role not in ("practitioner", "staff"):
                raise AuthApiError(403, "insufficient_scope", "only EHR staff create launches")
        if client_id is not None and self.store.get_client(client_id) is None:
            raise AuthApiError(400, "invalid_request", "unknown client_id")
        ttl = self.settings.auth_launch_minutes * 60
        launch = LaunchContext(
            launch_id=secrets.token_urlsafe(24),
            patient=patient,
            encounter=encounter,
            created_by=record.user_id or record.client_id,
            expires_at=self.now() + ttl,
            client_id=client_id,
        )
        self.store.save_launch(launch)
        body: Doc = {"launch": launch.launch_id, "iss": self.urls.fhir_base, "expires_in": ttl}
        if patient:
            body["patient"] = patient
        if client_id:
            body["client_id"] = client_id
        return body

    def register_client(self, record: TokenRecord, spec: Doc) -> Doc:
        """POST /auth/clients: 201 body with the client and (symmetric) its secret."""
        self._require_admin(record)
        try:
            client, secret = build_client(spec)
        except ClientSpecError as exc:
            raise AuthApiError(400, "invalid_client_metadata", str(exc)) from exc
        if not self.store.insert_client(client):
            raise AuthApiError(409, "invalid_client_metadata", "client_id is already registered")
        body = client.public_view()
        if secret:
            body["client_secret"] = secret
        return body

    def list_clients(self, record: TokenRecord) -> list[Doc]:
        self._require_admin(record)
        return [c.public_view() for c in self.store.list_clients()]

    def get_client(self, record: TokenRecord, client_id: str) -> Doc:
        self._require_admin(record)
        client = self.store.get_client(client_id)
        if client is None:
            raise AuthApiError(404, "not_found", "no such client")
        return client.public_view()

    def delete_client(self, record: TokenRecord, client_id: str) -> None:
        self._require_admin(record)
        if not self.store.delete_client(client_id):
            raise AuthApiError(404, "not_found", "no such client")

    # ---- administration (CLI, bootstrap, demo) -------------------------------------------

    def add_client(self, spec: Doc, replace: bool = True) -> tuple[Client, str | None]:
        """Register (or with replace, update) a client; returns it and any new secret."""
        client, secret = build_client(spec)
        if replace:
            self.store.upsert_client(client)
        elif not self.store.insert_client(client):
            raise ClientSpecError(f"client {client.client_id} already exists")
        return client, secret

    def load_clients_file(self, path: Path) -> list[str]:
        """Upsert the clients of a bootstrap file; a symmetric client without a secret in
        the file keeps the one it has (or gets one, logged once)."""
        loaded: list[str] = []
        for spec in read_clients_file(path):
            existing = self.store.get_client(str(spec.get("client_id")))
            keep_secret = (
                spec.get("type") == "confidential-symmetric"
                and not spec.get("client_secret")
                and existing is not None
                and existing.secret_hash
            )
            client, secret = build_client(spec)
            if keep_secret and existing is not None:
                client.secret_hash = existing.secret_hash
            elif secret and not spec.get("client_secret"):
                log.warning("client %s from %s got secret %s", client.client_id, path, secret)
            self.store.upsert_client(client)
            loaded.append(client.client_id)
        log.info("loaded %d clients from %s", len(loaded), path)
        return loaded

    def add_user(
        self,
        username: str,
        role: str,
        password: str,
        fhir_user: str | None = None,
        name: str = "",
        organization: str | None = None,
    ) -> User:
        """Create or replace a user (password hashed with scrypt)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if role == "patient" and not (fhir_user or "").startswith("Patient/"):
            raise ValueError("a patient user needs --fhir-user Patient/<id>")
        if role == "practitioner" and not (fhir_user or "").startswith(
            ("Practitioner/", "PractitionerRole/")
        ):
            raise ValueError("a practitioner user needs --fhir-user Practitioner/<id>")
        if role == "staff" and not (organization or "").startswith("Organization/"):
            raise ValueError("a staff user needs --organization Organization/<id>")
        if not username or len(username) > 100:
            raise ValueError("username must be 1-100 characters")
        user = User(username, role, fhir_user, name, hash_password(password),
                    organization=organization)
        self.store.upsert_user(user)
        return user

    def rotate_signing_key(self) -> str:
        return self.keys.rotate()
