"""Who is making a FHIR request: the identity the access policy and the audit trail see.

The request's bearer token is verified once (api/security.py) and the result is put on
`request.state.principal`; everything downstream reads it from there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from fhirserver.auth.scopes import Scopes


@dataclass(frozen=True)
class Principal:
    """The verified caller of one request."""

    role: str  # a user's role (auth.models.ROLES), "system" (backend services), "trusted"
    client_id: str | None
    scopes: Scopes
    user_id: str | None = None  # the login name, for users
    fhir_user: str | None = None  # "Practitioner/abc", "Patient/123"
    patient_id: str | None = None  # launch/patient context or the patient user's own id
    jti: str | None = None  # the access token's id: logged instead of the token itself
    organizations: tuple[str, ...] = field(default_factory=tuple)  # "Organization/x" for staff

    @property
    def is_trusted(self) -> bool:
        """True when authorization is switched off (development and the core test suite)."""
        return self.role == "trusted"


@lru_cache(maxsize=1)
def trusted_principal() -> Principal:
    """What every request acts as when authorization is off (FHIRSERVER_AUTH_REQUIRED=false)."""
    return Principal(role="trusted", client_id=None, scopes=Scopes.parse("system/*.*"))
