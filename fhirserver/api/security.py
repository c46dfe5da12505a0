"""Authorization of FHIR requests: the Bearer token becomes a Principal and an AccessPolicy.

Every FHIR route depends on `authorize` (through routes.get_ctx or the scheduling routes):
it sets `request.state.principal` (read by the audit trail) and, unless authorization is
off, the request's AccessPolicy (request.state and access.current).
"""

from __future__ import annotations

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from fhirserver.access.authenticate import authenticate, bearer_token, remembered
from fhirserver.access.current import CURRENT_POLICY
from fhirserver.access.policy import AccessPolicy
from fhirserver.auth.principal import Principal, trusted_principal
from fhirserver.context import AppContext, full_indexer
from fhirserver.fhir.errors import FhirError


async def authorize(request: Request, ctx: AppContext) -> AccessPolicy | None:
    """The request's policy (None when authorization is off); 401 without a valid token."""
    principal: Principal
    policy: AccessPolicy | None
    if not ctx.settings.auth_required:
        principal, policy = trusted_principal(), None
    else:
        if ctx.auth is None:
            raise FhirError("the authorization server is not running")
        token = bearer_token(request.headers.get("authorization"))
        cached = remembered(ctx.auth, token)
        principal = (
            cached if cached is not None
            else await run_in_threadpool(authenticate, ctx.auth, token)
        )
        policy = AccessPolicy(principal, ctx.store, full_indexer)
    request.state.principal = principal
    request.state.policy = policy
    CURRENT_POLICY.set(policy)
    return policy


def request_policy(request: Request) -> AccessPolicy | None:
    """The policy `authorize` put on the request."""
    policy: AccessPolicy | None = getattr(request.state, "policy", None)
    return policy
