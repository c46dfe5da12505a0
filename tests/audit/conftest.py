"""A real server for the audit-trail tests (own database), and helpers to read its trail."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pymongo import AsyncMongoClient

from fhirserver.config import Settings
from fhirserver.phi.cipher import is_sealed, record_context
from fhirserver.phi.codec import PhiCodec
from fhirserver.scheduling.clock import SettableClock
from fhirserver.storage.embedded import EmbeddedServers
from tests.thread_server import serve_in_thread, settings_on

AUDIT_DB = "audit_tests"
CLIENT_ID = "audit-app"
CLIENT_SECRET = "s3cret-audit-app"
PASSWORD = "correct horse battery"
REDIRECT = "http://127.0.0.1:9/callback"


@dataclass
class AuditServer:
    """The running server, its settings and app (for its AuthService)."""

    base_url: str
    settings: Settings
    app: FastAPI

    @property
    def auth_base(self) -> str:
        return self.base_url.rsplit("/fhir", 1)[0] + "/auth"


@pytest.fixture(scope="session")
def audit_server(embedded: EmbeddedServers) -> Iterator[AuditServer]:
    """Serve the app over real HTTP for the audit tests, with an OAuth client and users."""
    settings = settings_on(embedded, AUDIT_DB)
    with serve_in_thread(settings, SettableClock()) as srv:
        app = srv.config.app
        auth = app.state.ctx.auth
        auth.add_client(
            {
                "client_id": CLIENT_ID,
                "type": "confidential-symmetric",
                "client_secret": CLIENT_SECRET,
                "redirect_uris": [REDIRECT],
                "scope": "openid fhirUser launch/patient user/*.rs system/*.rs",
                "grant_types": ["authorization_code", "client_credentials"],
            }
        )
        auth.add_user("audit-dr", "practitioner", PASSWORD, "Practitioner/audit-pr-1", "Dr Audit")
        yield AuditServer(settings.base_url(), settings, app)


@pytest.fixture
async def client(audit_server: AuditServer) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the FHIR base."""
    async with httpx.AsyncClient(base_url=audit_server.base_url, timeout=60) as c:
        yield c


@pytest.fixture
async def audit_db(mongo_client: AsyncMongoClient[dict[str, Any]]) -> Any:
    """The audit tests' database, read directly (as an operator would)."""
    return mongo_client[AUDIT_DB]


async def events_for(client: httpx.AsyncClient, request_id: str) -> list[dict[str, Any]]:
    """The AuditEvents of one request, found by its X-Request-Id (the BALP transaction
    entity). The request's response was only sent after its event committed: no waiting."""
    r = await client.get("/AuditEvent", params={"entity-identifier": request_id})
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])]


async def only_event(client: httpx.AsyncClient, response: httpx.Response) -> dict[str, Any]:
    """The single AuditEvent of the request that produced `response`."""
    found = await events_for(client, response.headers["x-request-id"])
    assert len(found) == 1, found
    return found[0]


def codes(codings: Any) -> set[str]:
    """The codes of a Coding or a list of Codings."""
    items = codings if isinstance(codings, list) else [codings]
    return {c["code"] for c in items}


def entities(event: dict[str, Any], role: str) -> list[dict[str, Any]]:
    """The entities of an event with the given object-role code ("1" patient, "4" data,
    "24" query, "13" security resource)."""
    return [e for e in event.get("entity", []) if e.get("role", {}).get("code") == role]


def patient_refs(event: dict[str, Any]) -> set[str]:
    """The patients an event names."""
    return {e["what"]["reference"] for e in entities(event, "1")}


def query_of(event: dict[str, Any]) -> str:
    """The decoded BALP Query entity's query."""
    (query,) = entities(event, "24")
    return base64.b64decode(query["query"]).decode()


async def stored_trail(audit_db: Any, settings: Settings) -> list[bytes]:
    """Every stored AuditEvent's JSON, opened with the server's keyring (the stored blobs
    are sealed: a raw look at them alone shows nothing)."""
    cipher = PhiCodec.from_settings(settings).cipher
    found: list[bytes] = []
    async for doc in audit_db["AuditEvent"].find({}, {"raw": 1}):
        assert is_sealed(doc["raw"]), doc["_id"]
        found.append(cipher.open(record_context("AuditEvent", doc["_id"], 1), doc["raw"]))
    return found
