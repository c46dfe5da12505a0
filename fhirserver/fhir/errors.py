"""One error family that *is* an OperationOutcome; each class carries its HTTP status.

The domain raises these; api/ renders them. Nothing here imports FastAPI.
"""

from __future__ import annotations

from typing import Any


class FhirError(Exception):
    """Base error: an HTTP status plus one or more OperationOutcome issues."""

    status: int = 500
    code: str = "exception"

    def __init__(
        self,
        diagnostics: str,
        *,
        expression: list[str] | None = None,
        code: str | None = None,
        issues: list[dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
        contained: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        self.expression = expression
        if code is not None:
            self.code = code
        self.extra_issues = issues or []
        self.extra = extra or {}
        self.contained = contained or []

    def outcome(self) -> dict[str, Any]:
        """Render as an OperationOutcome resource."""
        issue: dict[str, Any] = {
            "severity": "error" if self.status < 500 else "fatal",
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            issue["expression"] = self.expression
        outcome: dict[str, Any] = {"resourceType": "OperationOutcome"}
        if self.contained:
            outcome["contained"] = self.contained
        outcome["issue"] = [issue, *self.extra_issues]
        return outcome


class BadRequest(FhirError):
    """400: malformed request or invalid resource."""

    status = 400
    code = "invalid"


class Unauthorized(FhirError):
    """401: no or bad credentials."""

    status = 401
    code = "login"


class Forbidden(FhirError):
    """403: authenticated but not allowed."""

    status = 403
    code = "forbidden"


class NotFound(FhirError):
    """404: unknown resource, type or version."""

    status = 404
    code = "not-found"


class MethodNotAllowed(FhirError):
    """405: interaction not supported."""

    status = 405
    code = "not-supported"


class NotAcceptable(FhirError):
    """406: requested format not supported."""

    status = 406
    code = "not-supported"


class Conflict(FhirError):
    """409: a write conflicts with current state (version race, double booking)."""

    status = 409
    code = "conflict"


class Gone(FhirError):
    """410: the resource was deleted."""

    status = 410
    code = "deleted"


class PreconditionFailed(FhirError):
    """412: If-Match / conditional precondition failed."""

    status = 412
    code = "conflict"


class PayloadTooLarge(FhirError):
    """413: request body over the configured limit."""

    status = 413
    code = "too-costly"


class UnsupportedMediaType(FhirError):
    """415: body is not FHIR JSON."""

    status = 415
    code = "not-supported"


class Unprocessable(FhirError):
    """422: well-formed but violates a business rule or profile."""

    status = 422
    code = "business-rule"


def warning_outcome(messages: list[str]) -> dict[str, Any]:
    """An OperationOutcome carrying warnings (e.g. ignored search parameters)."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {"severity": "warning", "code": "not-supported", "diagnostics": m} for m in messages
        ],
    }
