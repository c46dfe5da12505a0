"""HTTPS with --ssl-certfile/--ssl-keyfile: TLS 1.2 and 1.3 served, TLS 1.1 refused."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fhirserver.cli import _settings, build_parser
from fhirserver.storage.embedded import EmbeddedServers
from tests.phi.conftest import phi_settings
from tests.thread_server import serve_in_thread


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fhirserver test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    keyfile.chmod(0o600)
    return certfile, keyfile


@pytest.fixture(scope="module")
def https(embedded: EmbeddedServers, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[str, Path]]:
    """(FHIR base URL, certificate file) of a server on HTTPS."""
    d = tmp_path_factory.mktemp("tls")
    certfile, keyfile = self_signed(d)
    settings = phi_settings(embedded, d / "phi-keyring.json",
                            ssl_certfile=certfile, ssl_keyfile=keyfile)
    assert settings.base_url().startswith("https://")
    with serve_in_thread(settings) as server:
        # What the server will accept, read from the context it really serves with.
        assert server.config.ssl is not None
        assert server.config.ssl.minimum_version == ssl.TLSVersion.TLSv1_2
        yield settings.base_url(), certfile


def client_context(certfile: Path, lo: ssl.TLSVersion, hi: ssl.TLSVersion) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certfile))
    ctx.minimum_version, ctx.maximum_version = lo, hi
    return ctx


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_tls_12_and_13_are_served_and_verified(
    https: tuple[str, Path], version: ssl.TLSVersion
) -> None:
    base, certfile = https
    ctx = client_context(certfile, version, version)
    async with httpx.AsyncClient(verify=ctx, timeout=30) as c:
        r = await c.get(f"{base}/metadata")
        assert r.status_code == 200 and r.json()["resourceType"] == "CapabilityStatement"
        created = await c.post(f"{base}/Patient", json={"resourceType": "Patient"},
                               headers={"Content-Type": "application/fhir+json"})
        assert created.status_code == 201
        assert created.headers["location"].startswith(base)
    with pytest.raises(httpx.ConnectError):  # and the client really verifies the chain
        async with httpx.AsyncClient(timeout=10) as c:
            await c.get(f"{base}/metadata")


def test_tls_11_is_refused_by_the_server(https: tuple[str, Path]) -> None:
    base, certfile = https
    port = int(base.split(":")[2].split("/")[0])
    with warnings.catch_warnings():  # Python deprecates TLS 1.1: that is the point here
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = client_context(certfile, ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1_1)
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.1 at all
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            with pytest.raises(ssl.SSLError) as refused:
                ctx.wrap_socket(sock, server_hostname="127.0.0.1")
    reason = str(refused.value).lower()
    # The client sent its TLS 1.1 hello and the server answered with a protocol_version
    # alert or hung up (asyncio's TLS server closes without an alert). A local "no
    # protocols available" (an OpenSSL that cannot offer TLS 1.1) proves nothing: it fails.
    assert any(
        s in reason for s in ("protocol version", "unsupported protocol", "eof occurred")
    ), reason


def test_cli_flags_reach_the_settings(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["serve", "--ssl-certfile", str(tmp_path / "c.pem"), "--ssl-keyfile",
         str(tmp_path / "k.pem"), "--port", "8443"])
    settings = _settings(args)
    assert settings.ssl_certfile == tmp_path / "c.pem"
    assert settings.base_url() == "https://127.0.0.1:8443/fhir"
