"""`GET /metadata`: a CapabilityStatement generated from what the server really supports."""

from __future__ import annotations

from functools import cache
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from fhirserver import __version__
from fhirserver.api.negotiation import check_format
from fhirserver.api.responses import fhir_response
from fhirserver.auth.smart import capability_security
from fhirserver.fhir.errors import NotFound
from fhirserver.fhir.operations import operations
from fhirserver.fhir.searchparams import SEARCH_PARAMS
from fhirserver.fhir.types import RESOURCE_TYPES, is_read_only
from fhirserver.paths import project_dir
from fhirserver.storage.resources import format_instant, now_utc

router = APIRouter()

_TYPE_INTERACTIONS = (
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
)
_COMMON_SEARCH = (
    ("_id", "token", "Logical id of the resource"),
    ("_lastUpdated", "date", "When the resource version last changed"),
)


def _resource_entry(rtype: str) -> dict[str, Any]:
    params = [{"name": n, "type": t, "documentation": d} for n, t, d in _COMMON_SEARCH] + [
        {
            "name": p.name,
            "definition": f"http://hl7.org/fhir/SearchParameter/{rtype}-{p.name}",
            "type": "special" if p.type == "special" else p.type,
            **({"documentation": p.description} if p.description else {}),
        }
        for p in SEARCH_PARAMS.get(rtype, {}).values()
    ]
    refs = sorted(
        {
            f"{rtype}:{p.name}"
            for p in SEARCH_PARAMS.get(rtype, {}).values()
            if p.type == "reference"
        }
    )
    revs = sorted(
        {
            f"{src}:{p.name}"
            for src, defs in SEARCH_PARAMS.items()
            for p in defs.values()
            if p.type == "reference" and (not p.targets or rtype in p.targets)
        }
    )
    if is_read_only(rtype):
        # Written by the server only (the audit trail): read and search, nothing else.
        return {
            "type": rtype,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
            "documentation": "Append-only audit trail (IHE BALP); written by the server",
            "interaction": [{"code": "read"}, {"code": "search-type"}],
            "versioning": "no-version",
            "readHistory": False,
            "updateCreate": False,
            "conditionalCreate": False,
            "conditionalRead": "not-supported",
            "conditionalUpdate": False,
            "conditionalDelete": "not-supported",
            "referencePolicy": ["literal", "logical"],
            "searchInclude": ["*", *refs],
            "searchParam": params,
        }
    ops = [
        {"name": op.code, "definition": op.definition["url"]}
        for op in operations().values()
        if rtype in op.definition.get("resource", [])
    ]
    return {
        "type": rtype,
        **({"operation": ops} if ops else {}),
        "profile": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
        "interaction": [{"code": c} for c in _TYPE_INTERACTIONS],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalRead": "not-supported",
        "conditionalUpdate": True,
        "conditionalDelete": "single",
        "referencePolicy": ["literal", "local"],
        "searchInclude": ["*", *refs],
        "searchRevInclude": revs,
        "searchParam": params,
    }


@cache
def capability_statement() -> dict[str, Any]:
    """The CapabilityStatement body (timestamp aside), built once."""
    base = orjson.loads((project_dir("capability") / "CapabilityStatement-base.json").read_bytes())
    base["software"]["version"] = __version__
    base["rest"] = [
        {
            "mode": "server",
            "documentation": "FHIR R4 REST; JSON only; search paging by opaque cursor links",
            "resource": [_resource_entry(t) for t in RESOURCE_TYPES],
            "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}],
            "operation": [
                {"name": op.code, "definition": op.definition["url"]}
                for op in operations().values()
                if op.definition.get("system")
            ],
        }
    ]
    return dict(base)


@router.get("/metadata", summary="capabilities")
async def metadata(request: Request) -> Response:
    """The server's CapabilityStatement."""
    request.state.interaction = "capabilities"
    check_format(request)
    body = dict(capability_statement())
    body["date"] = format_instant(now_utc())
    settings = request.app.state.ctx.settings
    body["implementation"] = {"description": "fhirserver", "url": settings.base_url()}
    # SMART on FHIR: where to authorize (oauth-uris extension), next to /.well-known.
    body["rest"] = [{**body["rest"][0], "security": capability_security(settings)}]
    return fhir_response(orjson.dumps(body))


@router.get("/OperationDefinition/{op_id}", summary="read OperationDefinition")
async def operation_definition(request: Request, op_id: str) -> Response:
    """The OperationDefinitions this server implements (from capability/)."""
    request.state.interaction = "read"
    request.state.resource_type = "OperationDefinition"
    check_format(request)
    for op in operations().values():
        if op.definition["id"] == op_id:
            return fhir_response(orjson.dumps(op.definition))
    raise NotFound(f"OperationDefinition/{op_id} is not known")
