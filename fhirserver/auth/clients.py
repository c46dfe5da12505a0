"""Client registration: one validated spec for the bootstrap file, the CLI and the admin API.

A spec (JSON):

    {"client_id": "my-app", "type": "public" | "confidential-symmetric" | "confidential-asymmetric",
     "name": "My app", "redirect_uris": ["https://app.example/cb"],
     "scope": "launch/patient openid fhirUser offline_access patient/*.rs",
     "grant_types": [...]?, "client_secret": "..."?, "jwks": {...}? | "jwks_uri": "https://..."?,
     "introspect_any": false}

Defaults for `grant_types`: public and confidential-symmetric get authorization_code and
refresh_token; confidential-asymmetric gets client_credentials, plus the two above when it
has redirect URIs. A confidential-symmetric client without a `client_secret` gets a
generated one, returned once. Asymmetric clients register public keys (RS384/ES384-capable
RSA or P-384 EC keys) inline or by jwks_uri.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fhirserver.auth.models import Client
from fhirserver.auth.passwords import hash_password, new_secret
from fhirserver.auth.scopes import ScopeError, Scopes

GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._~-]{3,100}$")


class ClientSpecError(ValueError):
    """A client registration that cannot be accepted."""


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_redirect_uri(uri: str) -> str:
    """Absolute https URI (http only on loopback; or a private-use scheme), no fragment."""
    parts = urlsplit(uri)
    if parts.fragment or not parts.scheme:
        raise ValueError(f"redirect URI must be absolute without fragment: {uri}")
    if parts.scheme == "https" and parts.hostname:
        return uri
    if parts.scheme == "http":
        if parts.hostname and _loopback(parts.hostname):
            return uri
        raise ValueError(f"http redirect URIs are allowed on loopback only: {uri}")
    if "." in parts.scheme and parts.scheme not in ("javascript", "data", "file"):
        return uri  # native app private-use scheme (RFC 8252 7.1), e.g. com.example.app:/cb
    raise ValueError(f"unsupported redirect URI scheme: {uri}")


class ClientSpec(BaseModel):
    """A client registration request."""

    model_config = ConfigDict(extra="forbid")

    client_id: str
    type: Literal["public", "confidential-symmetric", "confidential-asymmetric"]
    scope: str
    name: str = ""
    redirect_uris: list[str] = Field(default_factory=list)
    grant_types: list[str] | None = None
    client_secret: str | None = None
    jwks: dict[str, Any] | None = None
    jwks_uri: str | None = None
    introspect_any: bool = False

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, v: str) -> str:
        if not _CLIENT_ID.match(v):
            raise ValueError("client_id: 3-100 characters of A-Z a-z 0-9 . _ ~ -")
        return v

    @field_validator("scope")
    @classmethod
    def _scope(cls, v: str) -> str:
        try:
            scopes = Scopes.parse(v)
        except ScopeError as exc:
            raise ValueError(str(exc)) from exc
        if not scopes:
            raise ValueError("scope must name at least one scope")
        return str(scopes)

    @field_validator("redirect_uris")
    @classmethod
    def _redirects(cls, v: list[str]) -> list[str]:
        return [check_redirect_uri(u) for u in v]

    @field_validator("grant_types")
    @classmethod
    def _grants(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (not v or any(g not in GRANT_TYPES for g in v)):
            raise ValueError(f"grant_types must be among {', '.join(GRANT_TYPES)}")
        return v


def _public_jwks(jwks: dict[str, Any]) -> dict[str, Any]:
    """Validate a JWKS and keep public parameters only."""
    try:
        keyset = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise ClientSpecError(f"jwks is not a valid JWK set: {exc}") from exc
    keys = []
    for key in keyset:
        if key.key_type not in ("RSA", "EC"):
            raise ClientSpecError("jwks keys must be RSA (RS384) or EC P-384 (ES384)")
        if key.key_type == "EC" and key.as_dict().get("crv") != "P-384":
            raise ClientSpecError("EC keys must use curve P-384 (ES384)")
        keys.append(key.as_dict(private=False))
    if not keys:
        raise ClientSpecError("jwks has no keys")
    return {"keys": keys}


def build_client(spec: ClientSpec | dict[str, Any]) -> tuple[Client, str | None]:
    """A validated Client and, for a symmetric client, its plaintext secret (shown once)."""
    if not isinstance(spec, ClientSpec):
        try:
            spec = ClientSpec.model_validate(spec)
        except ValidationError as exc:
            errors = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ClientSpecError(errors) from exc
    secret: str | None = None
    jwks: dict[str, Any] | None = None
    jwks_uri: str | None = None
    if spec.type == "public":
        if spec.client_secret or spec.jwks or spec.jwks_uri:
            raise ClientSpecError("a public client has no secret and no keys")
    elif spec.type == "confidential-symmetric":
        if spec.jwks or spec.jwks_uri:
            raise ClientSpecError("a symmetric client authenticates with a secret, not keys")
        secret = spec.client_secret or new_secret()
    else:
        if spec.client_secret:
            raise ClientSpecError("an asymmetric client authenticates with keys, not a secret")
        if bool(spec.jwks) == bool(spec.jwks_uri):
            raise ClientSpecError("an asymmetric client needs exactly one of jwks or jwks_uri")
        if spec.jwks:
            jwks = _public_jwks(spec.jwks)
        else:
            assert spec.jwks_uri
            parts = urlsplit(spec.jwks_uri)
            if not parts.hostname or not (
                parts.scheme == "https" or (parts.scheme == "http" and _loopback(parts.hostname))
            ):
                raise ClientSpecError("jwks_uri must be https (http on loopback only)")
            jwks_uri = spec.jwks_uri
    grants = spec.grant_types
    if grants is None:
        if spec.type == "confidential-asymmetric":
            grants = ["client_credentials"]
            if spec.redirect_uris:
                grants += ["authorization_code", "refresh_token"]
        else:
            grants = ["authorization_code", "refresh_token"]
    if "authorization_code" in grants and not spec.redirect_uris:
        raise ClientSpecError("authorization_code clients need at least one redirect URI")
    if spec.type == "public" and "client_credentials" in grants:
        raise ClientSpecError("a public client cannot use client_credentials")
    client = Client(
        client_id=spec.client_id,
        type=spec.type,
        scope=spec.scope,
        redirect_uris=list(spec.redirect_uris),
        grant_types=list(dict.fromkeys(grants)),
        name=spec.name or spec.client_id,
        secret_hash=hash_password(secret) if secret else None,
        jwks=jwks,
        jwks_uri=jwks_uri,
        introspect_any=spec.introspect_any,
    )
    return client, secret


def read_clients_file(path: Path) -> list[dict[str, Any]]:
    """The client specs in a bootstrap file: a JSON list, or {"clients": [...]}.

    A spec may name `jwks_file` (relative to the file) instead of inline `jwks`.
    """
    data = orjson.loads(path.read_bytes())
    items = data.get("clients") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ClientSpecError(f"{path}: expected a list of clients")
    specs: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, dict):
            raise ClientSpecError(f"{path}: every client must be an object")
        item = dict(item)
        if "jwks_file" in item:
            item["jwks"] = orjson.loads((path.parent / item.pop("jwks_file")).read_bytes())
        specs.append(item)
    return specs
