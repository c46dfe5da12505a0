"""What one HTTP request tells the audit trail: the interaction from its method and path,
the patients it involves, the resources it touched, the search it ran.

Patients are found without parsing JSON: search parameters naming a patient, and
`"reference":"...Patient/id"` / `"resourceType":"Patient","id":"..."` in the request and
response bytes (stored resources are served byte-for-byte, always in that compact form).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from fhirserver.audit.events import Actor, relative_reference
from fhirserver.auth.principal import Principal, trusted_principal

_TYPE_RE = re.compile(r"[A-Z][A-Za-z]+")
_ID = rb"[A-Za-z0-9\-.]{1,64}"
_ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_REF_PATIENT_RE = re.compile(
    rb'"reference":\s*"(?:[^"]*/)?Patient/(' + _ID + rb')(?:/_history/[^"]*)?"'
)
_PATIENT_RESOURCE_RE = re.compile(rb'"resourceType":\s*"Patient",\s*"id":\s*"(' + _ID + rb')"')
_LOCATION_RE = re.compile(rb'"location":\s*"([A-Z][A-Za-z]+/' + _ID + rb'(?:/_history/\d+)?)"')
_TOP_RESOURCE_RE = re.compile(rb'^\{"resourceType":"([A-Z][A-Za-z]+)","id":"(' + _ID + rb')"')
_QUERY_PATIENT_RE = re.compile(r"(?:^|/)Patient/([A-Za-z0-9\-.]{1,64})$")
#: Search / operation parameters whose bare value is a Patient id.
_PATIENT_PARAMS = frozenset({"patient", "patient-reference", "subject"})
#: Types whose every interaction is audited (they are, or point at, a patient's data).
PHI_TYPES = frozenset({"Patient", "Appointment", "AppointmentResponse", "AuditEvent"})
#: At most this many patients and resources are listed in one event.
MAX_ENTITIES = 1000

Params = list[tuple[str, str]]


@dataclass(frozen=True)
class Target:
    """A FHIR request as the trail sees it."""

    interaction: str  # read, vread, search-type, create, update, patch, delete, history-*, ...
    resource_type: str | None = None  # None: system level (Bundles, _history)
    rid: str | None = None
    vid: str | None = None
    operation: str | None = None  # "Appointment/$find"


def classify(method: str, path: str, base_path: str) -> Target | None:
    """The FHIR interaction of a request under the base, or None when it is not one the
    trail records (metadata, health, discovery, API docs, anything outside the base)."""
    if path != base_path and not path.startswith(base_path + "/"):
        return None
    segs = [s for s in path[len(base_path) :].split("/") if s]
    method = "GET" if method == "HEAD" else method
    if not segs:
        return Target("transaction") if method == "POST" else None
    if segs == ["_history"]:
        return Target("history-system")
    rtype = segs[0]
    if not _TYPE_RE.fullmatch(rtype) or rtype == "OperationDefinition":
        return None
    n = len(segs)
    if n == 1:
        kind = {"GET": "search-type", "POST": "create", "PUT": "update", "DELETE": "delete"}
        return Target(kind.get(method, method.lower()), rtype)
    second = segs[1]
    if n == 2 and second == "_search":
        return Target("search-type", rtype)
    if n == 2 and second == "_history":
        return Target("history-type", rtype)
    if second.startswith("$"):
        return Target("operation", rtype, operation=f"{rtype}/{second}")
    if n == 2:
        kind = {"GET": "read", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
        return Target(kind.get(method, method.lower()), rtype, second)
    if n >= 3 and segs[2].startswith("$"):
        return Target("operation", rtype, second, operation=f"{rtype}/{segs[2]}")
    if n == 3 and segs[2] == "_history":
        return Target("history-instance", rtype, second)
    if n == 4 and segs[2] == "_history":
        return Target("vread", rtype, second, segs[3])
    return Target("other", rtype, second)


def patients_in_body(body: bytes) -> set[str]:
    """`Patient/id` of every patient a JSON body references or contains."""
    if b"Patient" not in body:
        return set()
    found = {f"Patient/{m.decode()}" for m in _REF_PATIENT_RE.findall(body)}
    found.update(f"Patient/{m.decode()}" for m in _PATIENT_RESOURCE_RE.findall(body))
    return found


def patients_in_query(resource_type: str | None, params: Params) -> set[str]:
    """Patients a search or operation names (`patient=1`, `actor=Patient/1`, `Patient?_id=1`)."""
    found: set[str] = set()
    for key, value in params:
        name = key.split(":", 1)[0]
        if "." in name:  # chained: patient.name=... is not an id
            continue
        for item in value.split(","):
            item = item.rsplit("|", 1)[-1].strip()
            m = _QUERY_PATIENT_RE.search(item)
            if m:
                found.add(f"Patient/{m.group(1)}")
            elif _ID_RE.fullmatch(item) and (
                name in _PATIENT_PARAMS or (resource_type == "Patient" and name == "_id")
            ):
                found.add(f"Patient/{item}")
    return found


def touched_resources(
    target: Target, headers: Mapping[bytes, bytes], body: bytes, status: int
) -> list[str]:
    """The resources a request read or wrote (`Type/id[/_history/n]`), for entity.what."""
    refs: list[str] = []
    location = headers.get(b"location") or headers.get(b"content-location")
    if location and status < 400:
        ref = _relative_location(location.decode("latin-1"))
        if ref:
            refs.append(ref)
    if not refs and target.rid and target.resource_type and target.operation is None:
        ref = f"{target.resource_type}/{target.rid}"
        refs.append(f"{ref}/_history/{target.vid}" if target.vid else ref)
    if status < 400 and target.resource_type is None and target.interaction == "transaction":
        refs += [m.decode() for m in _LOCATION_RE.findall(body)]
    if status < 400 and target.operation is not None and not refs:
        m = _TOP_RESOURCE_RE.match(body)
        if m and m.group(1) != b"Bundle":
            refs.append(f"{m.group(1).decode()}/{m.group(2).decode()}")
        refs += [m.decode() for m in _LOCATION_RE.findall(body)]
    return list(dict.fromkeys(refs))[:MAX_ENTITIES]


def _relative_location(url: str) -> str | None:
    parts = [p for p in url.split("?", 1)[0].split("/") if p]
    for i in range(len(parts) - 1):
        if _TYPE_RE.fullmatch(parts[i]) and _ID_RE.fullmatch(parts[i + 1]):
            return "/".join(parts[i:])
    return None


_QUERIES = frozenset({"search-type", "history-type", "history-system", "history-instance"})


def search_query(target: Target, query_string: str, form_body: bytes | None) -> bytes | None:
    """The search as sent (`Type?a=b&c=d`), for the BALP Query entity; None for non-queries
    (an operation called with GET parameters counts as a query)."""
    if target.interaction not in _QUERIES and not (target.operation and query_string):
        return None
    parts = [query_string] if query_string else []
    if form_body:
        parts.append(form_body.decode("utf-8", "replace"))
    if target.operation:
        path = target.operation
    else:
        segs = [
            target.resource_type,
            target.rid if target.interaction == "history-instance" else None,
        ]
        if target.interaction.startswith("history"):
            segs.append("_history")
        path = "/".join(p for p in segs if p)
    return (path + ("?" + "&".join(parts) if parts else "")).encode("utf-8")


@dataclass(frozen=True)
class EntryExchange:
    """One entry of a transaction or batch Bundle with its response entry."""

    method: str
    path: str  # the entry's URL path, under the FHIR base (`/fhir/Patient/1`)
    query_string: str
    status: int
    location: str | None
    request_body: bytes  # the entry's resource, as JSON ("" when none)
    response_body: bytes  # the response entry's resource (a searchset for a GET)


def _status_code(status: object) -> int:
    head = str(status or "").split(" ", 1)[0]
    return int(head) if head.isdigit() else 500


def bundle_kind(request: bytes) -> str:
    """"batch" when a Bundle posted to the base says so, else "transaction"."""
    try:
        sent = orjson.loads(request)
    except orjson.JSONDecodeError:
        return "transaction"
    return "batch" if isinstance(sent, dict) and sent.get("type") == "batch" else "transaction"


def _entry_url(req_entry: Mapping[str, Any], base_path: str) -> tuple[str, str, str]:
    """(method, path under the base, query string) of one request entry."""
    req = req_entry.get("request")
    req = req if isinstance(req, dict) else {}
    url = str(req.get("url") or "")
    if "://" in url:  # an absolute URL on this server
        parts = urlsplit(url)
        url = parts.path[len(base_path) :] + (f"?{parts.query}" if parts.query else "")
    path, _, query = url.lstrip("/").partition("?")
    return str(req.get("method") or "").upper(), f"{base_path}/{path}", query


def _entries(body: bytes) -> list[dict[str, Any]] | None:
    try:
        bundle = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    entries = bundle.get("entry") if isinstance(bundle, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        return None
    return entries


def bundle_exchanges(request: bytes, response: bytes, base_path: str) -> list[EntryExchange]:
    """The entries of a transaction/batch request paired with the response's entries (FHIR
    answers them in request order); [] when the bodies are not such a pair."""
    requests, responses = _entries(request), _entries(response)
    if not requests or responses is None or len(requests) != len(responses):
        return []
    pairs: list[EntryExchange] = []
    for req_entry, resp_entry in zip(requests, responses, strict=True):
        method, path, query = _entry_url(req_entry, base_path)
        resp = resp_entry.get("response")
        resp = resp if isinstance(resp, dict) else {}
        location = resp.get("location")
        resource, answer = req_entry.get("resource"), resp_entry.get("resource")
        pairs.append(
            EntryExchange(
                method=method,
                path=path,
                query_string=query,
                status=_status_code(resp.get("status")),
                location=location if isinstance(location, str) else None,
                request_body=orjson.dumps(resource) if resource is not None else b"",
                response_body=orjson.dumps(answer) if answer is not None else b"",
            )
        )
    return pairs


def patients_in_bundle_urls(request: bytes, base_path: str) -> set[str]:
    """Patients the entry URLs of a posted Bundle name (`Patient/1`, `Appointment?patient=1`),
    for a Bundle refused as a whole."""
    found: set[str] = set()
    for req_entry in _entries(request) or []:
        method, path, query = _entry_url(req_entry, base_path)
        target = classify(method or "GET", path, base_path)
        if target is None:
            continue
        found |= patients_in_query(target.resource_type, query_params(query, None))
        if target.resource_type == "Patient" and target.rid:
            found.add(f"Patient/{target.rid}")
    return found


def query_params(query_string: str, form_body: bytes | None) -> Params:
    """The parameters of the URL and of a form body together."""
    params = parse_qsl(query_string, keep_blank_values=True)
    if form_body:
        params += parse_qsl(form_body.decode("utf-8", "replace"), keep_blank_values=True)
    return params


def actor_for(principal: Principal | None, status: int) -> Actor:
    """The audit actor of a FHIR request: the principal the access layer set, else the
    trusted principal (authorization off), else nobody (a 401 without a principal)."""
    if principal is None:
        if status == 401:
            return Actor(display="anonymous (not authenticated)")
        principal = trusted_principal()
    if principal.is_trusted:
        return Actor(display="trusted caller (authorization off)", role="trusted")
    return Actor(
        client_id=principal.client_id,
        user_id=principal.user_id,
        fhir_user=relative_reference(principal.fhir_user),
        role=principal.role if principal.role != "system" else None,
        jti=principal.jti,
    )


# ---- the token endpoint -----------------------------------------------------------------


def _b64_json(segment: str) -> dict[str, Any]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def jwt_claims(token: object) -> dict[str, Any]:
    """The (unverified) claims of a JWT; {} when it is not one. Used only on tokens this
    server has just issued, or to name the client of a refused request."""
    if not isinstance(token, str) or token.count(".") != 2:
        return {}
    return _b64_json(token.split(".")[1])


def _first(pairs: Iterable[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in pairs if k == name and v), None)


def _basic_user(authorization: bytes | None) -> str | None:
    if not authorization or not authorization[:6].lower() == b"basic ":
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip()).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    user = decoded.split(":", 1)[0]
    return user or None


@dataclass(frozen=True)
class TokenFacts:
    """What a token request/response says, without any token in it."""

    actor: Actor
    grant_type: str | None
    scope: str | None
    patients: tuple[str, ...]
    error: str | None


def token_facts(form: Params, authorization: bytes | None, status: int, body: bytes) -> TokenFacts:
    """Who asked for a token and what was issued (by jti), or why it was refused."""
    try:
        data = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    grant_type = _first(form, "grant_type")
    claims = jwt_claims(data.get("access_token")) if status == 200 else {}
    if claims:
        client_id = claims.get("client_id")
        sub = claims.get("sub")
        patient = claims.get("patient")
        actor = Actor(
            client_id=client_id,
            user_id=sub if sub and sub != client_id else None,
            fhir_user=relative_reference(claims.get("fhirUser")),
            jti=claims.get("jti"),
        )
        patients = (f"Patient/{patient}",) if isinstance(patient, str) and patient else ()
        return TokenFacts(actor, grant_type, claims.get("scope"), patients, None)
    client_id = (
        _first(form, "client_id")
        or _basic_user(authorization)
        or jwt_claims(_first(form, "client_assertion")).get("iss")
    )
    error = data.get("error") if isinstance(data.get("error"), str) else None
    return TokenFacts(
        Actor(client_id=str(client_id) if client_id else None, display="unknown client"),
        grant_type,
        _first(form, "scope"),
        (),
        error or f"HTTP {status}",
    )
