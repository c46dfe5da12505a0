"""PHI never reaches the application log, even at DEBUG: drive names, birth dates,
identifiers and searches through the API and look for them in everything logged."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import httpx
import pytest

from fhirserver.api.observability import configure_logging
from tests.api.factories import uid


@pytest.fixture
def server_log() -> Iterator[io.StringIO]:
    """The process's JSON log (what `fhirserver serve` writes to stderr), at DEBUG."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("pymongo").level)
    configure_logging("DEBUG")
    buffer = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)  # the production handler and formatter, into a buffer
    # The test's own HTTP client logs its URLs; it is not the server.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield buffer
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        logging.getLogger("pymongo").setLevel(saved[2])
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.NOTSET)


async def test_no_phi_in_logs(
    client: httpx.AsyncClient, server_log: io.StringIO
) -> None:
    family, given, mrn = f"Zyxwphi{uid()}", f"Qvgiven{uid()}", f"mrn-phi-{uid()}"
    body = {
        "resourceType": "Patient",
        "identifier": [{"system": "http://fhirserver.dev/sid/mrn", "value": mrn}],
        "name": [{"family": family, "given": [given]}],
        "birthDate": "1937-07-13",
        "telecom": [{"system": "phone", "value": "+1 555 0199 7731"}],
    }
    r = await client.post("/Patient", json=body)
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    assert (await client.get(f"/Patient/{pid}")).status_code == 200
    assert (await client.get("/Patient", params={"family": family})).json()["total"] == 1
    assert (await client.get("/Patient", params={"identifier": mrn})).status_code == 200
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    r = await client.post("/Patient/_search", content=f"given={given}", headers=form)
    assert r.is_success
    # errors that echo input: a bad update and a malformed search
    bad = {**body, "id": pid, "birthDate": f"{family}-not-a-date"}
    assert (await client.put(f"/Patient/{pid}", json=bad)).status_code == 400
    await client.get("/Patient", params={"birthdate": f"x{family}"})
    assert (await client.get(f"/AuditEvent?patient=Patient/{pid}")).status_code == 200

    logged = server_log.getvalue()
    assert '"logger": "fhirserver.access"' in logged  # the log was captured
    for secret in (family, given, mrn, "1937-07-13", "0199 7731", family.lower()):
        assert secret not in logged, f"{secret!r} leaked into the log"
