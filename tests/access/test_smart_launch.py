"""A SMART client library (PyPI fhirclient) drives a full standalone launch against the server
as `make run` starts it: demo data, demo credentials, authorization on.

The browser's part (login form, consent form) is played by httpx; everything else is the
library's own code: discovery, PKCE S256, the code exchange, the FHIR calls, the refresh.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fhirclient import client as smart_client
from fhirclient.models.appointment import Appointment as FcAppointment
from fhirclient.models.patient import Patient as FcPatient

from tests.api.conftest import free_port
from tests.auth.helpers import consent, login
from tests.serve_helpers import start_server, stop, wait_ready

REDIRECT = "http://127.0.0.1:8765/callback"  # registered for the demo client


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """`fhirserver serve` with demo data and authorization on; (base, secret, password)."""
    data_dir = tmp_path_factory.mktemp("launch")
    log = data_dir / "server.log"
    port = free_port()
    proc: subprocess.Popen[bytes] = start_server(
        data_dir / "data", port, env={"FHIRSERVER_AUTH_REQUIRED": "true"}, log=log
    )
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        wait_ready(proc, base, timeout=120)
        banner = _wait_for_banner(log)
        secret = re.search(r"demo-confidential / (\S+)", banner)
        password = re.search(r"demo-patient / (\S+)", banner)
        assert secret and password, banner
        yield base, secret.group(1), password.group(1)
    finally:
        if proc.poll() is None:
            stop(proc)


def _wait_for_banner(log: Path) -> str:
    text = log.read_text(errors="replace")
    assert "Demo SMART credentials" in text, text[-2000:]
    return text


async def test_fhirclient_standalone_launch(demo_server: tuple[str, str, str]) -> None:
    base, secret, password = demo_server
    auth_base = base.rsplit("/fhir", 1)[0] + "/auth"
    # Without a token the demo server refuses FHIR requests: auth stays on under `make run`.
    async with httpx.AsyncClient(timeout=30) as plain:
        assert (await plain.get(f"{base}/Patient")).status_code == 401

    smart = smart_client.FHIRClient(settings={
        "app_id": "demo-confidential",
        "app_secret": secret,
        "api_base": base,
        "redirect_uri": REDIRECT,
        "scope": "launch/patient openid fhirUser patient/*.rs offline_access",
    })
    authorize_url = smart.authorize_url  # discovery + PKCE S256 by the library
    assert "code_challenge_method=S256" in authorize_url

    async with httpx.AsyncClient(timeout=30, follow_redirects=False) as browser:
        r = await browser.get(authorize_url)
        assert r.status_code == 302 and "/auth/login" in r.headers["location"], r.text
        r = await login(browser, auth_base, r.headers["location"], "demo-patient", password)
        assert r.status_code == 303, r.text
        r, _ = await consent(browser, auth_base, r.headers["location"])
        assert r.status_code == 303, r.text
        callback = r.headers["location"]
    assert callback.startswith(REDIRECT)

    smart.handle_callback(callback)  # the library exchanges the code
    assert smart.patient_id == "pat-maria-lopez"
    me = FcPatient.read(smart.patient_id, smart.server)
    assert me.id == "pat-maria-lopez"
    mine = list(FcAppointment.where(struct={"_count": "100"}).perform_resources_iter(smart.server))
    assert mine, "the demo patient has appointments"
    refs = {p.actor.reference for a in mine for p in a.participant if p.actor}
    assert "Patient/pat-maria-lopez" in refs
    assert all(
        any(p.actor and p.actor.reference == "Patient/pat-maria-lopez" for p in a.participant)
        for a in mine
    ), "only her own appointments"
    # Another patient's record does not exist for her.
    async with httpx.AsyncClient(timeout=30) as plain:
        other = (await plain.get(f"{base}/Patient?_count=1", headers={
            "Authorization": f"Bearer {smart.server.auth.access_token}"})).json()
    assert [e["resource"]["id"] for e in other.get("entry", [])] == ["pat-maria-lopez"]

    old_token = smart.server.auth.access_token
    assert smart.server.reauthorize() is not None  # refresh_token grant, by the library
    assert smart.server.auth.access_token != old_token
    assert FcPatient.read(smart.patient_id, smart.server).id == "pat-maria-lopez"
