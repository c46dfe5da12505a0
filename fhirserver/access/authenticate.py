"""The Bearer token of a FHIR request, verified once, as a Principal."""

from __future__ import annotations

from dataclasses import dataclass

from fhirserver.auth.models import TokenRecord, User
from fhirserver.auth.principal import Principal
from fhirserver.auth.scopes import ScopeError, Scopes
from fhirserver.auth.service import AuthService
from fhirserver.fhir.errors import Unauthorized

CHALLENGE = 'Bearer realm="fhirserver"'


class InvalidToken(Unauthorized):
    """401 with the RFC 6750 challenge: missing, malformed, expired or revoked token."""

    def __init__(self, message: str, error: str | None = "invalid_token") -> None:
        challenge = CHALLENGE if error is None else f'{CHALLENGE}, error="{error}"'
        super().__init__(message, code="login", extra={"headers": {"WWW-Authenticate": challenge}})


@dataclass(frozen=True)
class Verified:
    """A verified token's Principal and when the token expires."""

    principal: Principal
    expires_at: int


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer` header, or InvalidToken (401)."""
    if not authorization:
        raise InvalidToken("this server requires a Bearer access token", error=None)
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("the Authorization header must be 'Bearer <access token>'")
    return token.strip()


def remembered(auth: AuthService, token: str) -> Principal | None:
    """The Principal of a token verified a moment ago in this process and still unexpired
    (no thread, no store, no signature check)."""
    hit: Verified | None = auth.verified.get(token)
    if hit is None or hit.expires_at <= auth.now():
        return None
    principal: Principal = hit.principal
    return principal


def authenticate(auth: AuthService, token: str) -> Principal:
    """The Principal of a Bearer token, or InvalidToken (401); remembered for a few seconds.

    Blocking (the token store is a synchronous client): call it from a thread.
    """
    record = auth.tokens.verify_access(token)
    if record is None:
        raise InvalidToken("the access token is invalid, expired or revoked")
    user = auth.store.get_user(record.user_id) if record.user_id else None
    if record.user_id and (user is None or user.disabled):
        raise InvalidToken("the token's user no longer exists or is disabled")
    principal = principal_of(record, user)
    auth.verified.put(token, Verified(principal, record.expires_at), record.jti, record.grant_id)
    return principal


def principal_of(record: TokenRecord, user: User | None) -> Principal:
    """The Principal of an active token and its user (None for backend services)."""
    try:
        scopes = Scopes.parse(record.scope)
    except ScopeError:
        raise InvalidToken("the access token carries an unreadable scope") from None
    patient = record.context.get("patient")
    if user is not None and user.patient_id:
        patient = user.patient_id  # a patient is bound to their own record, always
    return Principal(
        role=user.role if user is not None else "system",
        client_id=record.client_id,
        scopes=scopes,
        user_id=user.username if user is not None else None,
        fhir_user=_relative(user.fhir_user if user is not None else record.fhir_user),
        patient_id=str(patient) if patient else None,
        jti=record.jti,
        organizations=(user.organization,) if user is not None and user.organization else (),
    )


def _relative(reference: str | None) -> str | None:
    """`Type/id` of a fhirUser (the token carries it as an absolute URL)."""
    if not reference:
        return None
    parts = reference.rstrip("/").split("/")
    return "/".join(parts[-2:]) if len(parts) >= 2 else reference
