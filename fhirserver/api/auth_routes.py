"""HTTP for the SMART authorization server: discovery, browser flow, OAuth endpoints,
EHR launch and client administration. Thin: parse, call fhirserver.auth (in a worker
thread: authlib and the auth store are synchronous), render.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from fhirserver.api import auth_pages
from fhirserver.auth.patients import get_patient, pickable, search_patients
from fhirserver.auth.server import AuthResponse
from fhirserver.auth.service import (
    BROWSER_COOKIE,
    SESSION_COOKIE,
    AuthApiError,
    AuthService,
    FlowResult,
)
from fhirserver.context import AppContext

FORM_LIMIT = 64 * 1024
JSON_LIMIT = 256 * 1024
CORS = {"Access-Control-Allow-Origin": "*"}
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

# Mounted under the FHIR base (/fhir/.well-known/...).
wellknown_router = APIRouter()
# Mounted at the root (/auth/...).
router = APIRouter(prefix="/auth", tags=["auth"])


def _ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


def _auth(request: Request) -> AuthService:
    request.state.interaction = "auth"
    auth = _ctx(request).auth
    if auth is None:
        raise AuthApiError(503, "temporarily_unavailable", "the auth server is not running")
    return auth


async def _bearer(request: Request) -> tuple[AuthService, Any]:
    """The auth service and the verified Bearer token of a protected JSON endpoint."""
    auth = _auth(request)
    return auth, await run_in_threadpool(auth.bearer, request.headers.get("authorization"))


async def on_auth_api_error(request: Request, exc: Exception) -> Response:
    """The OAuth-style JSON error (with WWW-Authenticate on 401/403) for AuthApiError."""
    assert isinstance(exc, AuthApiError)
    return _api_error(exc)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


def _api_error(exc: AuthApiError) -> Response:
    headers = dict(NO_STORE)
    if exc.status in (401, 403):
        desc = exc.description.replace('"', "'")
        headers["WWW-Authenticate"] = f'Bearer error="{exc.error}", error_description="{desc}"'
    body = {"error": exc.error, "error_description": exc.description}
    return _json(body, exc.status, headers)


def _oauth(response: AuthResponse, cors: bool = False) -> Response:
    headers = {k: v for k, v in response.headers}
    if cors:
        headers.update(CORS)
    if isinstance(response.body, dict | list):
        return _json(response.body, response.status, headers)
    return Response(response.body or b"", status_code=response.status, headers=headers)


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None when it is larger than `limit`."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _form(request: Request) -> list[tuple[str, str]]:
    """An application/x-www-form-urlencoded body as (name, value) pairs."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise AuthApiError(400, "invalid_request", "expected application/x-www-form-urlencoded")
    body = await _read_body(request, FORM_LIMIT)
    if body is None:
        raise AuthApiError(413, "invalid_request", "request body too large")
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError) as exc:
        raise AuthApiError(400, "invalid_request", "malformed form body") from exc


async def _page_form(request: Request) -> list[tuple[str, str]] | Response:
    """A browser form's pairs, or the error page a bad form gets."""
    try:
        return await _form(request)
    except AuthApiError as exc:
        return auth_pages.error_page(exc.description, exc.status)


async def _json_body(request: Request) -> dict[str, Any]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise AuthApiError(415, "invalid_request", "expected application/json")
    body = await _read_body(request, JSON_LIMIT)
    if body is None:
        raise AuthApiError(413, "invalid_request", "request body too large")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise AuthApiError(400, "invalid_request", "malformed JSON") from exc
    if not isinstance(data, dict):
        raise AuthApiError(400, "invalid_request", "expected a JSON object")
    return data


def _cookies(request: Request) -> tuple[str | None, str | None]:
    return request.cookies.get(BROWSER_COOKIE), request.cookies.get(SESSION_COOKIE)


def _render(auth: AuthService, result: FlowResult, after_post: bool = False) -> Response:
    response: Response
    if result.redirect is not None:
        response = RedirectResponse(result.redirect, status_code=303 if after_post else 302)
        response.headers.update(auth_pages.SECURITY_HEADERS)
    elif result.page in auth_pages.PAGES:
        response = auth_pages.PAGES[result.page](result.data, result.status)
    else:
        response = auth_pages.error_page(result.data.get("message", "error"), result.status)
    secure = auth.urls.auth_base.startswith("https://")
    for name, value in result.cookies.items():
        max_age = auth.settings.auth_session_minutes * 60 if name == SESSION_COOKIE else None
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/auth",
            secure=secure,
            httponly=True,
            samesite="lax",
        )
    return response


def _first(pairs: list[tuple[str, str]], name: str) -> str:
    for k, v in pairs:
        if k == name:
            return v
    return ""


# ---- discovery -------------------------------------------------------------------------


@wellknown_router.get("/.well-known/smart-configuration", summary="SMART configuration")
async def smart_configuration(request: Request) -> Response:
    """SMART App Launch discovery document."""
    return _json(_auth(request).smart_configuration(), headers=CORS)


@wellknown_router.get("/.well-known/openid-configuration", summary="OpenID configuration")
async def openid_configuration(request: Request) -> Response:
    """OpenID Connect discovery document (for id_token validation)."""
    return _json(_auth(request).openid_configuration(), headers=CORS)


@router.get("/jwks", summary="token signing keys")
async def jwks(request: Request) -> Response:
    """The public keys that sign access and id tokens (current and previous)."""
    auth = _auth(request)
    return _json(await run_in_threadpool(auth.jwks), headers=CORS)


# ---- browser flow ------------------------------------------------------------------------


@router.get("/authorize", summary="authorization endpoint")
async def authorize(request: Request) -> Response:
    """Start an authorization: validate, then login / picker / consent."""
    auth = _auth(request)
    browser, session = _cookies(request)
    query = list(request.query_params.multi_items())
    headers = dict(request.headers)
    result = await run_in_threadpool(auth.authorize, query, headers, browser, session)
    return _render(auth, result)


@router.get("/login", summary="login page")
async def login_page(request: Request, req: str = "") -> Response:
    auth = _auth(request)
    browser, _ = _cookies(request)
    return _render(auth, await run_in_threadpool(auth.login_page, req, browser))


@router.post("/login", summary="log in")
async def login(request: Request) -> Response:
    auth = _auth(request)
    form = await _page_form(request)
    if isinstance(form, Response):
        return form
    browser, _ = _cookies(request)
    result = await run_in_threadpool(
        auth.login,
        _first(form, "req"),
        browser,
        _first(form, "csrf"),
        _first(form, "username"),
        _first(form, "password"),
    )
    return _render(auth, result, after_post=True)


@router.get("/picker", summary="patient picker")
async def picker(request: Request, req: str = "", q: str = "") -> Response:
    auth = _auth(request)
    browser, session = _cookies(request)
    result = await run_in_threadpool(auth.picker, req, browser, session)
    if result.page == "picker":
        result.data["q"] = q[:100]
        allowed = await _allowed_patients(request, req)
        result.data["patients"] = await search_patients(_ctx(request).store, q[:100], allowed)
    return _render(auth, result)


async def _allowed_patients(request: Request, req: str) -> dict[str, Any] | None:
    """The filter of the patients the signed-in user of request `req` may pick."""
    browser, session = _cookies(request)
    user = await run_in_threadpool(_auth(request).pending_user, req, browser, session)
    return await pickable(_ctx(request).store, user)



@router.post("/picker", summary="pick a patient")
async def pick(request: Request) -> Response:
    auth = _auth(request)
    form = await _page_form(request)
    if isinstance(form, Response):
        return form
    browser, session = _cookies(request)
    patient_id = _first(form, "patient").removeprefix("Patient/")
    allowed = await _allowed_patients(request, _first(form, "req"))
    exists = await get_patient(_ctx(request).store, patient_id, allowed) is not None
    result = await run_in_threadpool(
        auth.choose_patient,
        _first(form, "req"),
        browser,
        session,
        _first(form, "csrf"),
        patient_id,
        exists,
    )
    if result.page == "picker":
        result.data["patients"] = await search_patients(_ctx(request).store, "", allowed)
    return _render(auth, result, after_post=True)


@router.get("/consent", summary="consent page")
async def consent_page(request: Request, req: str = "") -> Response:
    auth = _auth(request)
    browser, session = _cookies(request)
    result = await run_in_threadpool(auth.consent_page, req, browser, session)
    if result.page == "consent" and result.data.get("patient_id"):
        result.data["patient"] = await get_patient(
            _ctx(request).store, str(result.data["patient_id"])
        )
    return _render(auth, result)


@router.post("/consent", summary="allow or deny")
async def consent(request: Request) -> Response:
    auth = _auth(request)
    form = await _page_form(request)
    if isinstance(form, Response):
        return form
    browser, session = _cookies(request)
    result = await run_in_threadpool(
        auth.consent,
        _first(form, "req"),
        browser,
        session,
        _first(form, "csrf"),
        _first(form, "decision") == "allow",
        [v for k, v in form if k == "scope"],
    )
    return _render(auth, result, after_post=True)


@router.get("/logout", summary="end the login session")
async def logout(request: Request) -> Response:
    auth = _auth(request)
    _, session = _cookies(request)
    await run_in_threadpool(auth.logout, session)
    response = auth_pages.message_page("Signed out", "You are signed out.")
    response.delete_cookie(SESSION_COOKIE, path="/auth")
    return response


# ---- OAuth endpoints ----------------------------------------------------------------------


async def _endpoint(request: Request, name: str, cors: bool) -> Response:
    auth = _auth(request)
    form = await _form(request)
    fn = {"token": auth.token, "introspect": auth.introspect, "revoke": auth.revoke}[name]
    response = await run_in_threadpool(fn, dict(request.headers), form)
    return _oauth(response, cors=cors)


@router.post("/token", summary="token endpoint")
async def token(request: Request) -> Response:
    """authorization_code, refresh_token, client_credentials."""
    return await _endpoint(request, "token", cors=True)


@router.post("/introspect", summary="token introspection (RFC 7662)")
async def introspect(request: Request) -> Response:
    return await _endpoint(request, "introspect", cors=False)


@router.post("/revoke", summary="token revocation (RFC 7009)")
async def revoke(request: Request) -> Response:
    return await _endpoint(request, "revoke", cors=True)


@router.options("/token", include_in_schema=False)
@router.options("/revoke", include_in_schema=False)
async def preflight(request: Request) -> Response:
    """CORS preflight for browser-based (public) SMART apps."""
    return Response(
        status_code=204,
        headers={
            **CORS,
            "Access-Control-Allow-Methods": "POST",
            "Access-Control-Allow-Headers": "Authorization, Content-Type",
            "Access-Control-Max-Age": "600",
        },
    )


# ---- EHR launch and client administration (Bearer-protected JSON) ----------------------------


@router.post("/launch", summary="create an EHR launch context")
async def create_launch(request: Request) -> Response:
    """Body {"patient": id, "encounter"?: id, "client_id"?: id}; needs fhirserver:launch."""
    auth, record = await _bearer(request)
    body = await _json_body(request)
    patient = body.get("patient")
    if patient is not None:
        if not isinstance(patient, str):
            raise AuthApiError(400, "invalid_request", "patient must be a string id")
        patient = patient.removeprefix("Patient/")
        if await get_patient(_ctx(request).store, patient) is None:
            raise AuthApiError(400, "invalid_request", f"Patient/{patient} is not known")
    encounter, client_id = body.get("encounter"), body.get("client_id")
    if not isinstance(encounter, str | None) or not isinstance(client_id, str | None):
        raise AuthApiError(400, "invalid_request", "encounter and client_id are strings")
    result = await run_in_threadpool(auth.create_launch, record, patient, encounter, client_id)
    return _json(result, 201, NO_STORE)


@router.post("/clients", summary="register a client")
async def register_client(request: Request) -> Response:
    """Needs a token with fhirserver:admin or system/*.* (docs/auth.md)."""
    auth, record = await _bearer(request)
    spec = await _json_body(request)
    result = await run_in_threadpool(auth.register_client, record, spec)
    return _json(result, 201, NO_STORE)


@router.get("/clients", summary="list clients")
async def list_clients(request: Request) -> Response:
    auth, record = await _bearer(request)
    result = await run_in_threadpool(auth.list_clients, record)
    return _json(result, 200, NO_STORE)


@router.get("/clients/{client_id}", summary="read a client")
async def read_client(request: Request, client_id: str) -> Response:
    auth, record = await _bearer(request)
    result = await run_in_threadpool(auth.get_client, record, client_id)
    return _json(result, 200, NO_STORE)


@router.delete("/clients/{client_id}", summary="delete a client")
async def delete_client(request: Request, client_id: str) -> Response:
    auth, record = await _bearer(request)
    await run_in_threadpool(auth.delete_client, record, client_id)
    return Response(status_code=204)
