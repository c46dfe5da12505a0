"""The one hook every audited request passes: an ASGI middleware inside the observability
middleware (so the request id is set) and outside the routes.

For a FHIR request under the base, a login (`POST /auth/login`) or a token request
(`POST /auth/token`), it holds the response back, builds the AuditEvent from the request,
the principal (`request.state.principal`, set by the access layer) and the response, and
awaits its durable commit by the group-commit writer before the response leaves. When the
record cannot be stored the client gets a 500 instead of the response: nothing is
disclosed unaudited.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhirserver.audit import events
from fhirserver.audit.facts import (
    MAX_ENTITIES,
    PHI_TYPES,
    Target,
    actor_for,
    bundle_exchanges,
    bundle_kind,
    classify,
    patients_in_body,
    patients_in_bundle_urls,
    patients_in_query,
    query_params,
    search_query,
    token_facts,
    touched_resources,
)
from fhirserver.audit.writer import AuditWriteFailed, AuditWriter

log = logging.getLogger(__name__)

# Queries: BALP PatientQuery wants one AuditEvent per patient in the result.
QUERY_INTERACTIONS = frozenset({"search-type", "history-type", "history-instance",
                                "history-system"})
LOGIN_PATH = "/auth/login"
TOKEN_PATH = "/auth/token"
SESSION_COOKIE = b"fhirserver_session="
_LOGIN_FAILURES = {401: "unknown user or wrong password", 429: "locked: too many failures"}


class _Exchange:
    """One request's body (as read by the app) and its held-back response."""

    def __init__(self) -> None:
        self.request_body: list[bytes] = []
        self.messages: list[Message] = []
        self.status = 500
        self.headers: dict[bytes, bytes] = {}
        self.set_cookies: list[bytes] = []

    def body(self) -> bytes:
        return b"".join(
            m.get("body", b"") for m in self.messages if m["type"] == "http.response.body"
        )

    def request(self) -> bytes:
        return b"".join(self.request_body)


class AuditMiddleware:
    """Writes the AuditEvent of every audited request before its response is sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") == "OPTIONS":
            await self.app(scope, receive, send)
            return
        ctx = getattr(scope["app"].state, "ctx", None)
        writer: AuditWriter | None = getattr(ctx, "audit", None)
        if ctx is None or writer is None:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        target = classify(method, path, ctx.settings.base_path)
        auth_kind = None
        if method == "POST" and path in (LOGIN_PATH, TOKEN_PATH):
            auth_kind = path
        if target is None and auth_kind is None:
            await self.app(scope, receive, send)
            return

        ex = _Exchange()
        capture = method in ("POST", "PUT", "PATCH")

        async def receive_wrapper() -> Message:
            message = await receive()
            if capture and message["type"] == "http.request":
                ex.request_body.append(message.get("body", b""))
            return message

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                ex.status = message["status"]
                for k, v in message.get("headers", []):
                    if k == b"set-cookie":
                        ex.set_cookies.append(v)
                    else:
                        ex.headers[k.lower()] = v
            ex.messages.append(message)

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        except Exception:
            # Unhandled: the error middleware outside answers 500; record it first.
            ex.status = 500
            ex.messages = []
            try:
                await self._audit(scope, ctx, writer, target, auth_kind, ex)
            except AuditWriteFailed:
                pass
            raise
        try:
            await self._audit(scope, ctx, writer, target, auth_kind, ex)
        except AuditWriteFailed:
            await _send_failure(send, auth_kind is not None)
            return
        for message in ex.messages:
            await send(message)

    async def _audit(
        self,
        scope: Scope,
        ctx: Any,
        writer: AuditWriter,
        target: Target | None,
        auth_kind: str | None,
        ex: _Exchange,
    ) -> None:
        state: dict[str, Any] = scope.setdefault("state", {})
        client = scope.get("client")
        context = events.Context(
            recorded=datetime.now(UTC),
            request_id=str(state.get("request_id", "")),
            client_ip=client[0] if client else None,
            server=ctx.settings.base_url(),
            status=ex.status,
        )
        found: list[dict[str, Any]]
        if auth_kind == LOGIN_PATH:
            found = [_login_event(context, ex)]
        elif auth_kind == TOKEN_PATH:
            found = [_token_event(context, ex, scope)]
        else:
            assert target is not None
            found = _rest_event(
                context, target, ex, scope, state.get("principal"), ctx.settings.base_path
            )
        # One group commit takes them all: the request waits for the batch, not each one.
        await asyncio.gather(*(writer.record(event) for event in found))


def _rest_event(
    context: events.Context, target: Target, ex: _Exchange, scope: Scope, principal: Any,
    base_path: str,
) -> list[dict[str, Any]]:
    """The AuditEvents of one REST request. A transaction or batch that was answered
    entry by entry is audited entry by entry (each a read, search, create, ... of its own,
    with the Bundle kind as a second subtype); anything else, a refused Bundle included,
    as one request."""
    actor = actor_for(principal, ex.status)
    body = ex.body()
    subtype = target.interaction
    named: set[str] = set()
    if target.interaction == "transaction":
        subtype = bundle_kind(ex.request())
        entries = bundle_exchanges(ex.request(), body, base_path) if ex.status < 400 else []
        if entries:
            found: list[dict[str, Any]] = []
            for entry in entries:
                entry_target = classify(entry.method, entry.path, base_path)
                if entry_target is not None:
                    found += _interaction_events(
                        replace(context, status=entry.status), entry_target, actor,
                        subtype=entry_target.interaction, via=subtype,
                        query_string=entry.query_string, form=None,
                        request_body=entry.request_body, response_body=entry.response_body,
                        headers={b"location": entry.location.encode()} if entry.location else {},
                    )
            return found
        named = patients_in_bundle_urls(ex.request(), base_path)
    query_string = scope.get("query_string", b"").decode("latin-1")
    form = (
        ex.request() if target.interaction == "search-type" and scope["method"] == "POST" else None
    )
    return _interaction_events(
        context, target, actor, subtype=subtype, via=None, query_string=query_string,
        form=form, request_body=ex.request(), response_body=body, headers=ex.headers,
        named=named,
    )


def _interaction_events(
    context: events.Context,
    target: Target,
    actor: events.Actor,
    *,
    subtype: str,
    via: str | None,
    query_string: str,
    form: bytes | None,
    request_body: bytes,
    response_body: bytes,
    headers: dict[bytes, bytes],
    named: set[str] | None = None,
) -> list[dict[str, Any]]:
    """The AuditEvents of one interaction: none when it touches no PHI; for a query that
    returned several patients one per patient (BALP PatientQuery), else one. `named`:
    patients known from elsewhere (the entry URLs of a refused Bundle)."""
    params = query_params(query_string, form)
    patients = patients_in_query(target.resource_type, params) | (named or set())
    if target.resource_type == "Patient" and target.rid:
        patients.add(f"Patient/{target.rid}")
    if target.resource_type != "AuditEvent":  # reading the trail does not make it about them
        patients |= patients_in_body(response_body)
        if request_body:
            patients |= patients_in_body(request_body)
    # $find offers public availability: it touches PHI only when it names a patient.
    phi_type = target.resource_type in PHI_TYPES and target.operation != "Appointment/$find"
    phi = target.resource_type is None or phi_type or bool(patients)
    if not phi:
        return []
    ordered = tuple(sorted(patients))[:MAX_ENTITIES]
    per_patient = target.interaction in QUERY_INTERACTIONS and len(ordered) > 1
    groups = [(p,) for p in ordered] if per_patient else [ordered]
    data = tuple(touched_resources(target, headers, response_body, context.status))
    query = search_query(target, query_string, form)
    return [
        events.rest_event(
            replace(context, patients=group), actor, subtype,
            data=data, query=query, operation=target.operation, via=via,
        )
        for group in groups
    ]


def _login_event(context: events.Context, ex: _Exchange) -> dict[str, Any]:
    params = query_params("", ex.request())
    username = next((v for k, v in params if k == "username"), "")
    ok = any(c.startswith(SESSION_COOKIE) and len(c) > len(SESSION_COOKIE) for c in ex.set_cookies)
    status = ex.status if ok else (ex.status if ex.status >= 400 else 401)
    desc = "login succeeded" if ok else _LOGIN_FAILURES.get(status, "sign-in request rejected")
    context = replace(context, status=status, outcome_desc=desc)
    return events.login_event(context, username[:200])


def _token_event(context: events.Context, ex: _Exchange, scope: Scope) -> dict[str, Any]:
    form = query_params("", ex.request())
    authorization = dict(scope.get("headers") or []).get(b"authorization")
    facts = token_facts(form, authorization, ex.status, ex.body())
    context = replace(context, patients=facts.patients, outcome_desc=facts.error or "token issued")
    return events.token_event(context, facts.actor, grant_type=facts.grant_type, scope=facts.scope)


async def _send_failure(send: Send, oauth: bool) -> None:
    if oauth:
        body = orjson.dumps(
            {"error": "server_error", "error_description": "the audit trail is unavailable"}
        )
        ctype = b"application/json"
    else:
        body = orjson.dumps(
            {
                "resourceType": "OperationOutcome",
                "issue": [
                    {
                        "severity": "fatal",
                        "code": "exception",
                        "diagnostics": "the audit trail is unavailable; the request was "
                        "not answered (writes may have been applied)",
                    }
                ],
            }
        )
        ctype = b"application/fhir+json"
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
