"""A real server for the authorization tests, plus clients, users and patients to use."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from fhirserver.auth.service import AuthService
from fhirserver.config import Settings
from fhirserver.scheduling.clock import SettableClock
from fhirserver.storage.embedded import EmbeddedServers
from tests.api.conftest import free_port
from tests.auth.helpers import (
    CONFIDENTIAL,
    PASSWORD,
    PUBLIC,
    REDIRECT,
    SEEDER,
    SEEDER_SECRET,
    client_token_sync,
    new_ec_key,
    new_rsa_key,
    public_jwks,
)
from tests.thread_server import serve_in_thread


@dataclass
class AuthServer:
    """The running server: FHIR base, auth base, its AuthService and clock."""

    fhir_base: str
    auth_base: str
    app: FastAPI
    clock: SettableClock
    settings: Settings

    @property
    def auth(self) -> AuthService:
        service = self.app.state.ctx.auth
        assert service is not None
        return service

    @property
    def token_url(self) -> str:
        return f"{self.auth_base}/token"


@dataclass
class BackendKeys:
    """Private keys of the two backend-services test clients (RS384 and ES384)."""

    rsa: object
    ec: object


@pytest.fixture(scope="session")
def auth_server(embedded: EmbeddedServers) -> Iterator[AuthServer]:
    """Serve the app over real HTTP for the auth tests (own database, settable clock)."""
    port = free_port()
    settings = Settings(
        mongodb_uri=embedded.mongodb_uri,
        redis_url=embedded.redis_url,
        db_name="auth_tests",
        port=port,
        demo=False,
        auth_required=True,
    )
    clock = SettableClock()
    with serve_in_thread(settings, clock) as srv:
        base = settings.base_url()
        running = AuthServer(
            base, base.rsplit("/fhir", 1)[0] + "/auth", srv.config.app, clock, settings
        )
        _seed(running)
        yield running


BACKEND_KEYS = BackendKeys(rsa=new_rsa_key("rsa-1"), ec=new_ec_key("ec-1"))


def _seed(srv: AuthServer) -> None:
    """Clients, users and patients every test module may use."""
    auth = srv.auth
    app_scope = (
        "openid fhirUser profile launch launch/patient offline_access online_access "
        "patient/*.cruds user/*.cruds"
    )
    auth.add_client(
        {
            "client_id": CONFIDENTIAL,
            "type": "confidential-symmetric",
            "client_secret": "s3cret-conf",
            "redirect_uris": [REDIRECT],
            "scope": app_scope,
        }
    )
    auth.add_client(
        {"client_id": PUBLIC, "type": "public", "redirect_uris": [REDIRECT], "scope": app_scope}
    )
    auth.add_client(
        {
            "client_id": "backend-rs384",
            "type": "confidential-asymmetric",
            "jwks": public_jwks(BACKEND_KEYS.rsa),
            "scope": "system/Appointment.rs system/Slot.rs system/Patient.r",
        }
    )
    auth.add_client(
        {
            "client_id": "backend-es384",
            "type": "confidential-asymmetric",
            "jwks": public_jwks(BACKEND_KEYS.ec),
            "scope": "system/*.rs",
        }
    )
    auth.add_client(
        {
            "client_id": "admin-service",
            "type": "confidential-symmetric",
            "client_secret": "s3cret-admin",
            "scope": "fhirserver:admin fhirserver:launch system/*.rs",
            "grant_types": ["client_credentials"],
        }
    )
    auth.add_client(
        {
            "client_id": SEEDER,
            "type": "confidential-symmetric",
            "client_secret": SEEDER_SECRET,
            "scope": "system/*.cruds",
            "grant_types": ["client_credentials"],
        }
    )
    auth.add_user("dr-smith", "practitioner", PASSWORD, "Practitioner/auth-pr-1", "Dr. Smith")
    auth.add_user("clerk", "staff", PASSWORD, None, "Front Desk", "Organization/auth-org-1")
    auth.add_user("alice", "patient", PASSWORD, "Patient/auth-pat-1", "Alice Auth")
    auth.add_user("lonely", "patient", PASSWORD, "Patient/auth-pat-404", "No Record")
    with httpx.Client(base_url=srv.fhir_base, timeout=30) as http:
        http.headers["Authorization"] = "Bearer " + client_token_sync(
            srv.auth_base, SEEDER, SEEDER_SECRET, "system/*.cruds"
        )
        # Bob is Dr. Smith's patient and the clinic's (the clerk's organization); Carol is
        # the clinic's only; Alice is neither's.
        for pid, given, family, gp, org in (
            ("auth-pat-1", "Alice", "Authtest", None, None),
            ("auth-pat-2", "Bob", "Pickme", "Practitioner/auth-pr-1", "Organization/auth-org-1"),
            ("auth-pat-3", "Carol", "Pickme", None, "Organization/auth-org-1"),
        ):
            body: dict[str, Any] = {
                "resourceType": "Patient",
                "id": pid,
                "name": [{"given": [given], "family": family}],
                "birthDate": "1980-01-02",
            }
            if gp:
                body["generalPractitioner"] = [{"reference": gp}]
            if org:
                body["managingOrganization"] = {"reference": org}
            r = http.put(f"/Patient/{pid}", json=body)
            assert r.status_code in (200, 201), r.text


@pytest.fixture
async def http(auth_server: AuthServer) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-less client (own cookie jar) that does not follow redirects."""
    async with httpx.AsyncClient(timeout=30, follow_redirects=False) as c:
        yield c


@pytest.fixture
def backend_keys() -> BackendKeys:
    return BACKEND_KEYS
