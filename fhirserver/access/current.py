"""The access policy of the request being served, for code far from the route.

Set once per FHIR request (api/security.py); read by the write hook and the searcher.
Unset (None) means an internal caller: the demo loader, workers, the CLI.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from fhirserver.access.policy import AccessPolicy

CURRENT_POLICY: ContextVar[AccessPolicy | None] = ContextVar("access_policy", default=None)


def current_policy() -> AccessPolicy | None:
    """The policy of the request in progress, or None for internal work."""
    return CURRENT_POLICY.get()


async def check_write_hook(
    rtype: str, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None, _session: Any
) -> None:
    """FhirService write hook: every create, update and delete, however it arrives (REST,
    transaction entry, $hold, $book), must be the caller's to make."""
    policy = CURRENT_POLICY.get()
    if policy is not None:
        await policy.check_write(rtype, old, new)
