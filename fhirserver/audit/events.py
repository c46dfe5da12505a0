"""AuditEvent resources in the style of IHE Basic Audit Log Patterns (BALP).

Pure functions: the caller says who did what to which data with which outcome; these
build the R4 AuditEvent JSON. Access tokens never appear, only their `jti`
(`agent.policy`, and the token entity of a token-issue event).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fhirserver.storage.resources import format_instant

Doc = dict[str, Any]

DCM = "http://dicom.nema.org/resources/ontology/DCM"
EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
BALP_ENTITY = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"
BALP_PROFILE = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit."
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
IHE_EVENT = "urn:ihe:event-type-code"
CLIENT_SYSTEM = "urn:fhirserver:client-id"
USER_SYSTEM = "urn:fhirserver:username"
ROLE_SYSTEM = "urn:fhirserver:role"
JTI_SYSTEM = "urn:fhirserver:jti"
OPERATION_SYSTEM = "urn:fhirserver:operation"

#: FHIR interaction -> AuditEvent.action (C create, R read, U update, D delete, E execute).
ACTIONS = {"create": "C", "read": "R", "vread": "R", "update": "U", "patch": "U", "delete": "D"}
#: FHIR interaction -> the BALP profile it follows (Patient* when a patient is involved).
PROFILES = {
    "create": "Create",
    "read": "Read",
    "vread": "Read",
    "update": "Update",
    "patch": "Update",
    "delete": "Delete",
    "search-type": "Query",
    "search-system": "Query",
    "history-system": "Query",
    "history-type": "Query",
    "history-instance": "Query",
}


def outcome_code(status: int) -> str:
    """AuditEvent.outcome from an HTTP status: 0 success, 4 client error, 8 server error,
    12 unhandled failure (500)."""
    if status < 400:
        return "0"
    if status < 500:
        return "4"
    return "12" if status == 500 else "8"


def relative_reference(ref: str | None) -> str | None:
    """`http://x/fhir/Practitioner/1` -> `Practitioner/1`; relative references unchanged."""
    if not ref:
        return None
    parts = [p for p in ref.split("/") if p]
    if len(parts) >= 2 and parts[-2][:1].isupper():
        return f"{parts[-2]}/{parts[-1]}"
    return ref


@dataclass(frozen=True)
class Actor:
    """Who acted: the OAuth client, the user behind it, the token (by jti only)."""

    client_id: str | None = None
    user_id: str | None = None
    fhir_user: str | None = None
    role: str | None = None
    jti: str | None = None
    display: str | None = None  # for callers without identity: "anonymous", "trusted ..."


@dataclass(frozen=True)
class Context:
    """Facts every event records: when, the request id, the addresses, the HTTP status."""

    recorded: datetime
    request_id: str
    client_ip: str | None
    server: str
    status: int
    outcome_desc: str | None = None
    patients: tuple[str, ...] = field(default_factory=tuple)


def _coding(system: str, code: str, display: str | None = None) -> Doc:
    out: Doc = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def _network(address: str | None, kind: str = "2") -> Doc:
    return {"network": {"address": address, "type": kind}} if address else {}


def _agents(ctx: Context, actor: Actor, user_type: Doc | None = None) -> list[Doc]:
    has_user = bool(actor.user_id or actor.fhir_user)
    client: Doc = {"type": {"coding": [_coding(DCM, "110153", "Source Role ID")]}}
    if actor.client_id:
        client["who"] = {
            "identifier": {"system": CLIENT_SYSTEM, "value": actor.client_id},
            "display": actor.client_id,
        }
        client["altId"] = actor.client_id
    else:
        client["who"] = {"display": actor.display or "anonymous"}
    client["requestor"] = not has_user
    client.update(_network(ctx.client_ip))
    if actor.jti and not has_user:
        client["policy"] = [actor.jti]
    agents = [client]
    server: Doc = {
        "type": {"coding": [_coding(DCM, "110152", "Destination Role ID")]},
        "who": {"display": ctx.server},
        "requestor": False,
        **_network(ctx.server, "5"),
    }
    agents.append(server)
    if has_user:
        who: Doc = {}
        if actor.fhir_user:
            who["reference"] = actor.fhir_user
        if actor.user_id:
            who["identifier"] = {"system": USER_SYSTEM, "value": actor.user_id}
        user: Doc = {
            "type": user_type
            or {"coding": [_coding(PARTICIPATION, "IRCP", "information recipient")]},
            "who": who,
        }
        if actor.user_id:
            user["altId"] = actor.user_id
        if actor.role:
            user["role"] = [{"coding": [_coding(ROLE_SYSTEM, actor.role)]}]
        user["requestor"] = True
        user.update(_network(ctx.client_ip))
        if actor.jti:
            user["policy"] = [actor.jti]
        agents.append(user)
    return agents


def _request_entity(request_id: str) -> Doc:
    return {
        "what": {"identifier": {"value": request_id}},
        "type": _coding(BALP_ENTITY, "XrequestId"),
    }


def _patient_entity(ref: str) -> Doc:
    return {
        "what": {"reference": ref},
        "type": _coding(ENTITY_TYPE, "1", "Person"),
        "role": _coding(OBJECT_ROLE, "1", "Patient"),
    }


def _data_entity(ref: str) -> Doc:
    return {
        "what": {"reference": ref},
        "type": _coding(ENTITY_TYPE, "2", "System Object"),
        "role": _coding(OBJECT_ROLE, "4", "Domain Resource"),
    }


def _query_entity(query: bytes) -> Doc:
    return {
        "type": _coding(ENTITY_TYPE, "2", "System Object"),
        "role": _coding(OBJECT_ROLE, "24", "Query"),
        "query": base64.b64encode(query).decode("ascii"),
    }


def _base(ctx: Context, type_: Doc, subtypes: list[Doc], action: str, profile: str | None) -> Doc:
    event: Doc = {"resourceType": "AuditEvent"}
    if profile:
        event["meta"] = {"profile": [BALP_PROFILE + profile]}
    event.update(
        {
            "type": type_,
            "subtype": subtypes,
            "action": action,
            "recorded": format_instant(ctx.recorded),
            "outcome": outcome_code(ctx.status),
            "outcomeDesc": ctx.outcome_desc or f"HTTP {ctx.status}",
        }
    )
    return event


def _source(ctx: Context) -> Doc:
    return {
        "observer": {"display": ctx.server},
        "type": [_coding(SOURCE_TYPE, "4", "Application Server")],
    }


def rest_event(
    ctx: Context,
    actor: Actor,
    interaction: str,
    *,
    data: tuple[str, ...] = (),
    query: bytes | None = None,
    operation: str | None = None,
    via: str | None = None,
) -> Doc:
    """A FHIR REST interaction (read, search, create, update, delete, operation, Bundle).

    `data` are the resources touched (`Type/id` or `Type/id/_history/n`), `query` the
    search as sent (`Type?a=b`), `ctx.patients` every patient involved (`Patient/id`),
    `via` the Bundle ("transaction" or "batch") an entry's interaction came in, recorded as
    a second subtype.
    """
    profile = PROFILES.get(interaction)
    if profile and ctx.patients:
        profile = "Patient" + profile
    if operation:
        subtypes = [_coding(RESTFUL, "operation"), _coding(OPERATION_SYSTEM, operation)]
    else:
        subtypes = [_coding(RESTFUL, interaction)]
    if via:
        subtypes.append(_coding(RESTFUL, via))
    event = _base(
        ctx,
        _coding(EVENT_TYPE, "rest", "Restful Operation"),
        subtypes,
        ACTIONS.get(interaction, "E"),
        profile,
    )
    event["agent"] = _agents(ctx, actor)
    event["source"] = _source(ctx)
    entities = [_request_entity(ctx.request_id)]
    entities += [_data_entity(ref) for ref in data]
    if query is not None:
        entities.append(_query_entity(query))
    entities += [_patient_entity(ref) for ref in ctx.patients]
    event["entity"] = entities
    return event


def _authentication_event(ctx: Context, subtype: Doc, actor: Actor) -> Doc:
    """A DCM 110114 User Authentication event of `actor` (entities left to the caller)."""
    event = _base(ctx, _coding(DCM, "110114", "User Authentication"), [subtype], "E", None)
    event["agent"] = _agents(ctx, actor)
    event["source"] = _source(ctx)
    return event


def login_event(ctx: Context, username: str) -> Doc:
    """A user's login attempt at /auth/login (success or failure: `ctx.status`)."""
    actor = Actor(user_id=username or "(empty)", display="browser")
    event = _authentication_event(ctx, _coding(DCM, "110122", "Login"), actor)
    event["entity"] = [_request_entity(ctx.request_id)]
    return event


def token_event(
    ctx: Context,
    actor: Actor,
    *,
    grant_type: str | None,
    scope: str | None,
) -> Doc:
    """A token request at /auth/token (IHE IUA ITI-71 Get Access Token). `actor.jti` is
    the issued access token's id; the token itself is never recorded."""
    event = _authentication_event(ctx, _coding(IHE_EVENT, "ITI-71", "Get Access Token"), actor)
    entities = [_request_entity(ctx.request_id)]
    details = [
        {"type": name, "valueString": value}
        for name, value in (("grant_type", grant_type), ("scope", scope))
        if value
    ]
    if actor.jti or details:
        token: Doc = {
            "type": _coding(ENTITY_TYPE, "2", "System Object"),
            "role": _coding(OBJECT_ROLE, "13", "Security Resource"),
        }
        if actor.jti:
            token["what"] = {"identifier": {"system": JTI_SYSTEM, "value": actor.jti}}
        if details:
            token["detail"] = details
        entities.append(token)
    entities += [_patient_entity(ref) for ref in ctx.patients]
    event["entity"] = entities
    return event
