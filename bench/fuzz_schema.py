"""The OpenAPI schema `make fuzz` runs schemathesis against: the server's own, made fuzzable.

The FHIR routes read their query string and body themselves (FHIR parameters are open
ended), so the schema FastAPI generates declares only path parameters: schemathesis alone
would send no body to create/update/patch/$find/$hold/$book/transaction and no search
parameter to any search. `augment` adds what the server itself declares elsewhere:

- the resource types and search parameters of its CapabilityStatement (`/metadata`):
  `{rtype}` becomes an enum, and every type gets its own `GET /fhir/{Type}` with its
  search parameters (a few modifiers, and the result parameters);
- the input parameters of its OperationDefinitions: `$find` query parameters, and a
  Parameters body for `$find`, `$hold` and `$book`;
- request bodies: a loose FHIR resource schema (create, update), JSON Patch (patch), a
  Bundle (transaction/batch at the base), form parameters (`_search`);
- the headers the routes read (If-Match, If-None-Exist, If-None-Match, Prefer,
  Idempotency-Key);
- examples taken from the running server's demo data (real ids, one real resource of each
  type, a proposed Appointment from `$find`), so that the examples phase reaches the code
  behind validation, not only the 400s in front of it.

Every operation of the server's schema is kept (same path, method and operationId); the
added per-type `GET /fhir/{Type}` (search) and `POST /fhir/{Type}` (create) are extra. Each
operation carries a constant `X-Fuzz-Operation` header naming it, for the per-operation
counts of the HAR log.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

Json = dict[str, Any]

# Result parameters every search accepts (fhirserver.fhir.search.RESULT_PARAMS).
RESULT_PARAMS: dict[str, list[str]] = {
    "_count": ["0", "1", "10", "100", "1000", "-1", "abc", "\u00b2", "--5", "\u0663"],
    "_sort": ["_lastUpdated", "-_lastUpdated", "_id", "start", "-start", "name", "foo"],
    "_total": ["none", "accurate", "estimate", "bogus"],
    "_summary": ["true", "count", "data", "text", "false", "bogus"],
    "_elements": ["id", "name,status", "resourceType", ""],
    "_include": ["*", "Appointment:patient", "Slot:schedule", "PractitionerRole:practitioner"],
    "_revinclude": ["*", "Slot:schedule", "Appointment:actor", "PractitionerRole:location"],
    "_cursor": ["abc", "", "eyJ2IjpbXX0", "AAAA"],
    "_id": ["pat-emma-johnson", "a,b", ""],
    "_lastUpdated": ["ge2020-01-01", "lt2100", "2026-01-01T00:00:00Z", "ap2026", "x",
                     "ge0001-01-01T00:00:00+14:00", "sa9999-12-31T23:59:59-14:00"],
    "_format": ["json", "application/fhir+json", "xml"],
}
# Edge values that found bugs before (keep them): year 1/9999 with extreme UTC offsets,
# non-ASCII digits that str.isdigit() accepts and int() does not.
_EDGE_DATES = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "9999-12-31",
               "0001-01-01"]
_EDGE_INTS = ["\u00b2", "--5", "\u0663", "99999999999999999999999", "1e3"]
_DATE_EXAMPLES = ["ge2026-01-01", "lt2030-01-01T00:00:00Z", "2026", "eq2026-11-24",
                  "sa2026-11-24T10:00:00-05:00", "ap2026-11", "gt2026-02-30", "le",
                  *_EDGE_DATES, *(f"{p}{d}" for p in ("eq", "ge", "lt") for d in _EDGE_DATES)]
_TOKEN_EXAMPLES = ["free", "http://fhirserver.dev/CodeSystem/visit-type|NEW_PATIENT",
                   "|booked", "system|", "NEW_PATIENT,FOLLOW_UP", "%"]
_STRING_EXAMPLES = ["Garcia", "ana", "", "Dr.", "é", "a,b"]
_NUMBER_EXAMPLES = ["1", "ge10", "1e3", "lt-1.5", "NaN", "inf", "\u00b2", "1e999"]
_SPECIAL_EXAMPLES = ["42.36|-71.06|10|km", "0|0", "a|b|c", "91|181|1|mi"]
_VALUE_EXAMPLES = {"date": _DATE_EXAMPLES, "token": _TOKEN_EXAMPLES, "string": _STRING_EXAMPLES,
                   "number": _NUMBER_EXAMPLES, "quantity": _NUMBER_EXAMPLES,
                   "uri": ["http://example.org/x", "urn:uuid:1"], "special": _SPECIAL_EXAMPLES}
_MODIFIERS = {"string": ["exact", "contains"], "token": ["not", "text"], "uri": ["below"]}


def _s(examples: list[Any] | None = None, **extra: Any) -> Json:
    """A non-empty string schema with examples (empty ones come from negative testing)."""
    out: Json = {"type": "string", "minLength": 1, **extra}
    if examples and [e for e in examples if e != ""]:
        out["examples"] = [e for e in examples if e != ""]
    return out


def _arr(items: Json, max_items: int = 3) -> Json:
    return {"type": "array", "items": items, "minItems": 1, "maxItems": max_items}


def _obj(props: Json, required: list[str] | None = None) -> Json:
    out: Json = {"type": "object", "properties": props, "minProperties": 1}
    if required:
        out["required"] = required
    return out


def fetch_json(client: httpx.Client, url: str) -> Any:
    """GET a JSON document; raise with the body on an error status."""
    resp = client.get(url, headers={"Accept": "application/fhir+json"})
    if resp.status_code != 200:
        raise RuntimeError(f"GET {url}: HTTP {resp.status_code}: {resp.text[:300]}")
    return resp.json()


class ServerFacts:
    """What the running server declares and holds: types, search params, ops, sample data."""

    def __init__(self, base: str, openapi: Json, metadata: Json,
                 operations: dict[str, Json], samples: dict[str, list[Json]],
                 proposed: Json | None, cursors: list[str]) -> None:
        self.base = base
        self.openapi = openapi
        self.metadata = metadata
        self.operations = operations
        self.samples = samples
        self.proposed = proposed
        self.cursors = cursors

    @property
    def resources(self) -> list[Json]:
        """The CapabilityStatement's rest.resource entries."""
        rest: list[Json] = self.metadata.get("rest", [])
        return [r for rest_entry in rest for r in rest_entry.get("resource", [])]

    @property
    def types(self) -> list[str]:
        """The resource types the server supports."""
        return [str(r["type"]) for r in self.resources]

    def ids(self) -> list[str]:
        """Ids of existing resources (any type)."""
        return sorted({str(r["id"]) for rs in self.samples.values() for r in rs if "id" in r})

    def references(self) -> list[str]:
        """`Type/id` of existing resources, plus a few broken ones."""
        refs = [f"{t}/{r['id']}" for t, rs in self.samples.items() for r in rs[:2]]
        return [*refs, "Patient/does-not-exist", "urn:uuid:0", "#contained", "Patient?name=x"]


def collect(base: str, timeout: float = 60.0) -> ServerFacts:
    """Read the schema, CapabilityStatement, OperationDefinitions and sample data."""
    with httpx.Client(timeout=timeout) as client:
        openapi = fetch_json(client, f"{base}/openapi.json")
        metadata = fetch_json(client, f"{base}/metadata")
        ops: dict[str, Json] = {}
        seen: set[str] = set()
        for rest in metadata.get("rest", []):
            for entry in [*rest.get("operation", []),
                          *(o for r in rest.get("resource", []) for o in r.get("operation", []))]:
                op_id = str(entry.get("definition", "")).rstrip("/").rsplit("/", 1)[-1]
                if op_id and op_id not in seen:
                    seen.add(op_id)
                    definition = fetch_json(client, f"{base}/OperationDefinition/{op_id}")
                    ops[str(definition["code"])] = definition
        samples: dict[str, list[Json]] = {}
        for res in (r for rest in metadata.get("rest", []) for r in rest.get("resource", [])):
            bundle = fetch_json(client, f"{base}/{res['type']}?_count=5")
            samples[res["type"]] = [e["resource"] for e in bundle.get("entry", [])
                                    if "resource" in e]
        proposed = None
        if "find" in ops:
            start = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT00:00:00Z")
            resp = client.get(f"{base}/Appointment/$find", params={"start": start})
            if resp.status_code == 200:
                found = [e["resource"] for e in resp.json().get("entry", []) if "resource" in e]
                proposed = found[0] if found else None
        cursors: list[str] = []
        sched = next(iter(samples.get("Schedule", [])), None)
        for path in ([f"Slot?schedule=Schedule/{sched['id']}&_count=2"] if sched else []) + [
                "Patient?_count=1", "Slot?_count=1&_sort=start"]:
            links = fetch_json(client, f"{base}/{path}").get("link", [])
            for link in links:
                if link.get("relation") == "next":
                    token = parse_qs(urlsplit(link["url"]).query).get("_cursor", [""])[0]
                    # the real token, and two tampered ones
                    cursors += [token, token[:-3], token[:5] + "A" + token[6:]]
    return ServerFacts(base, openapi, metadata, ops, samples, proposed,
                       [c for c in cursors if c] + crafted_cursors())


def crafted_cursors() -> list[str]:
    """Well-formed cursor tokens (base64 JSON) with the wrong shape inside."""
    payloads: list[Any] = [
        {"k": [], "f": True}, {"k": [1], "f": True}, {"k": ["a", "b", "c"], "f": False},
        {"k": [None, None], "f": True}, {"k": [{"d": "2026-01-01T00:00:00"}, 5], "f": True},
        {"k": "ab", "f": True}, {"k": [["x"], {"d": 1}], "f": 0}, [1, 2], "k",
    ]
    return [base64.urlsafe_b64encode(json.dumps(p).encode()).decode().rstrip("=")
            for p in payloads]


def model_elements(rtype: str) -> tuple[set[str], set[str]] | None:
    """The JSON element names of an R4 resource type and the required ones (min 1), or None
    when fhir.resources does not know the type."""
    try:
        from fhir.resources.R4B import get_fhir_model_class

        model = get_fhir_model_class(rtype)
    except (ImportError, KeyError, ValueError):
        return None
    names, required = set(), set()
    for n, f in model.model_fields.items():
        name = str(f.alias or n)
        names.add(name)
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        if f.is_required() or extra.get("element_required"):
            required.add(name)
    return names, required


def resource_schema(facts: ServerFacts, rtype: str | None = None) -> Json:
    """A loose schema for a resource: the elements this server's types use, typed.

    With `rtype`, only that type's elements (from the R4 model), resourceType fixed.
    """
    refs = facts.references()
    dt = _s(["2030-01-07T09:00:00Z", "2030-01-07T09:00:00-05:00", "2026-11-24", "2026",
             "2030-01-07T25:00:00Z"])
    ref = _obj({"reference": _s(refs), "display": _s()})
    coding = _obj({"system": _s(["http://fhirserver.dev/CodeSystem/visit-type"]),
                   "code": _s(["NEW_PATIENT", "FOLLOW_UP", "TELEHEALTH"]), "display": _s()})
    concept = _obj({"coding": _arr(coding), "text": _s()})
    period = _obj({"start": dt, "end": dt})
    human = _obj({"family": _s(["Garcia"]), "given": _arr(_s(["Ana"])), "text": _s(),
                  "use": _s(["official"])})
    ident = _obj({"system": _s(["http://fhirserver.dev/sid/mrn"]), "value": _s(["RH-1"])})
    telecom = _obj({"system": _s(["phone", "email"]), "value": _s(), "use": _s()})
    address = _obj({"city": _s(), "state": _s(), "postalCode": _s(), "country": _s(),
                    "line": _arr(_s()), "use": _s()})
    extension = _obj({"url": _s(["http://fhirserver.dev/StructureDefinition/x"]),
                      "valueString": _s(), "valueInteger": {"type": "integer"},
                      "valueBoolean": {"type": "boolean"}, "valueCode": _s()})
    available = _obj({"daysOfWeek": _arr(_s(["mon", "tue", "sat"]), 7),
                      "allDay": {"type": "boolean"},
                      "availableStartTime": _s(["08:00:00", "25:00:00"]),
                      "availableEndTime": _s(["17:00:00"])})
    participant = _obj({"actor": ref, "status": _s(["accepted", "needs-action"]),
                        "required": _s(["required"]), "type": _arr(concept)})
    position = _obj({"latitude": {"type": "number"}, "longitude": {"type": "number"}})
    props: Json = {
        "resourceType": {"type": "string", "enum": facts.types},
        "id": _s(facts.ids()[:10] or None),
        "meta": _obj({"versionId": _s(["1"]), "lastUpdated": dt, "tag": _arr(coding),
                      "profile": _arr(_s())}),
        "text": _obj({"status": _s(["generated"]), "div": _s(["<div>x</div>"])}),
        "extension": _arr(extension),
        "identifier": _arr(ident),
        "active": {"type": "boolean"},
        "status": _s(["free", "busy", "busy-tentative", "proposed", "booked", "cancelled",
                      "active", "accepted"]),
        "name": {"anyOf": [_arr(human), _s(["Exam Room A"])]},
        "telecom": _arr(telecom),
        "address": {"anyOf": [_arr(address), address]},
        "gender": _s(["female", "male", "other", "unknown", "x"]),
        "birthDate": dt,
        "schedule": ref,
        "start": dt,
        "end": dt,
        "minutesDuration": {"type": "integer"},
        "slot": _arr(ref),
        "participant": _arr(participant),
        "actor": {"anyOf": [_arr(ref), ref]},
        "appointment": ref,
        "participantStatus": _s(["accepted", "declined"]),
        "serviceType": _arr(concept),
        "serviceCategory": _arr(concept),
        "specialty": _arr(concept),
        "appointmentType": concept,
        "planningHorizon": period,
        "practitioner": ref,
        "organization": ref,
        "managingOrganization": ref,
        "partOf": ref,
        "providedBy": ref,
        "location": {"anyOf": [_arr(ref), ref]},
        "healthcareService": _arr(ref),
        "availableTime": _arr(available),
        "position": position,
        "period": period,
        "comment": _s(),
        "description": _s(),
        "contained": _arr({"type": "object"}, 2),
    }
    required = ["resourceType"]
    if rtype is not None:
        model = model_elements(rtype)
        props = {k: v for k, v in props.items() if model is None or k in model[0]}
        props["resourceType"] = {"type": "string", "enum": [rtype]}
        if "name" in props and model is not None:  # HumanName[] or string, by type
            people = {"Patient", "Practitioner", "RelatedPerson"}
            props["name"] = props["name"]["anyOf"][0 if rtype in people else 1]
        ids = [str(r["id"]) for r in facts.samples.get(rtype, []) if "id" in r]
        props["id"] = _s(ids or None)
        required += sorted(k for k in (model[1] if model else ()) if k in props)
    return {"type": "object", "required": required, "properties": props}


def small_resource_schema(facts: ServerFacts, rtype: str | None = None) -> Json:
    """The elements every resource has, plus status and identifier."""
    full = resource_schema(facts, rtype)
    keep = ("resourceType", "id", "meta", "text", "extension", "identifier", "status")
    return {**full, "properties": {k: v for k, v in full["properties"].items() if k in keep},
            "required": [k for k in full["required"] if k in keep]}


def _example_resources(facts: ServerFacts, with_id: bool) -> dict[str, Json]:
    """One real resource per type, as an OpenAPI `examples` map."""
    out: dict[str, Json] = {}
    for rtype, rows in facts.samples.items():
        if not rows:
            continue
        res = copy.deepcopy(rows[0])
        res.pop("meta", None)
        if not with_id:
            res.pop("id", None)
        out[rtype] = {"value": res}
    return out


def bundle_schema(facts: ServerFacts, resource: Json) -> Json:
    """A transaction/batch Bundle with entries of every method."""
    urls = ["Patient", "Patient/pat-emma-johnson", "Slot?schedule=Schedule/x", "Appointment/",
            "Patient/pat-emma-johnson/_history/1", "Schedule?_id=x", "Nope/1", "/", "?a=b"]
    urls += [r for r in facts.references() if "/" in r][:6]
    request = _obj({
        "method": {"type": "string", "enum": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]},
        "url": _s(urls),
        "ifMatch": {"anyOf": [_s(['W/"1"', "1", "W/", 'W/"\u00b2"']), {"type": "integer"},
                              {"type": "array"}]},
        "ifNoneExist": _s(["identifier=http://fhirserver.dev/sid/mrn|RH-1", "_id=x", "?"]),
        "ifNoneMatch": _s(["*"]),
    }, required=["method", "url"])
    entry = _obj({"fullUrl": {"anyOf": [_s(["urn:uuid:6f1e0b6a-0b1e-4b7e-9a53-0c1b2d3e4f50",
                                             f"{facts.base}/Patient/pat-emma-johnson"]),
                                         {"type": "array"}, {"type": "integer"}]},
                  "resource": resource, "request": request})
    return _obj({"resourceType": {"type": "string", "enum": ["Bundle"]},
                 "type": {"type": "string", "enum": ["transaction", "batch", "collection"]},
                 "entry": _arr(entry, 4)}, required=["resourceType", "type"])


def _bundle_examples(facts: ServerFacts) -> dict[str, Json]:
    pat = {"resourceType": "Patient", "name": [{"family": "Fuzz"}]}
    sched = next(iter(facts.samples.get("Schedule", [])), {"id": "x"})
    appt_url = "urn:uuid:0d9c5ff0-1d2b-4a8e-9b1a-7c2f3e4d5a60"
    return {
        "transaction": {"value": {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": appt_url, "resource": pat, "request": {"method": "POST",
                                                                "url": "Patient"}},
            {"resource": {"resourceType": "Slot", "schedule": {"reference":
                                                               f"Schedule/{sched['id']}"},
                          "status": "busy-unavailable", "start": "2031-01-06T09:00:00Z",
                          "end": "2031-01-06T10:00:00Z"},
             "request": {"method": "POST", "url": "Slot"}},
            {"request": {"method": "GET", "url": f"Slot?schedule=Schedule/{sched['id']}"}},
        ]}},
        "batch": {"value": {"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": "Patient?_count=2"}},
            {"request": {"method": "DELETE", "url": "Patient/does-not-exist"}},
            {"resource": pat, "request": {"method": "PUT", "url": "Patient/fuzz-1"}},
            {"request": {"method": "PATCH", "url": "Patient/pat-emma-johnson"},
             "resource": {"resourceType": "Binary", "contentType": "application/json-patch+json",
                          "data": "W3sib3AiOiJ0ZXN0IiwicGF0aCI6Ii9pZCIsInZhbHVlIjoieCJ9XQ=="}},
        ]}},
    }


def _value_key(ptype: str) -> str:
    return {"integer": "valueInteger", "boolean": "valueBoolean", "dateTime": "valueDateTime",
            "instant": "valueInstant"}.get(ptype, "valueString")


def _op_inputs(definition: Json) -> list[Json]:
    return [p for p in definition.get("parameter", []) if p.get("use") == "in"]


def _op_names(definition: Json) -> list[str]:
    names: list[str] = []
    for p in _op_inputs(definition):
        names.append(p["name"])
        names += [e["valueString"] for e in p.get("extension", []) if "valueString" in e]
    return names


def _op_value_examples(ptype: str, facts: ServerFacts) -> list[Any]:
    soon = datetime.now(UTC) + timedelta(days=1)
    if ptype in ("dateTime", "instant"):
        return [soon.strftime("%Y-%m-%dT00:00:00Z"), soon.strftime("%Y-%m-%d"),
                (soon + timedelta(days=400)).strftime("%Y-%m-%d"), "2026-13-01", *_EDGE_DATES]
    if ptype == "integer":
        return [1, 5, 0, -1, 10**12, *_EDGE_INTS]
    if ptype == "boolean":
        return [True, False]
    return [*facts.references()[:6], "NEW_PATIENT", "42.36|-71.06|10|km", ""]


def parameters_schema(definition: Json, facts: ServerFacts, resource: Json) -> Json:
    """A Parameters resource carrying the operation's inputs (by name or alias), each
    parameter with the value[x] (or resource) its declared type calls for."""
    branches: list[Json] = []
    for p in _op_inputs(definition):
        names = [p["name"], *(e["valueString"] for e in p.get("extension", [])
                              if "valueString" in e)]
        ptype = p.get("type", "string")
        if ptype[:1].isupper():  # a resource type
            value_key, value = "resource", resource
        else:
            value_key = _value_key(ptype)
            value = ({"type": "integer"} if value_key == "valueInteger" else
                     {"type": "boolean"} if value_key == "valueBoolean" else
                     _s([str(v) for v in _op_value_examples(ptype, facts)]))
        branches.append(_obj({"name": {"type": "string", "enum": names}, value_key: value},
                             required=["name", value_key]))
    return _obj({"resourceType": {"type": "string", "enum": ["Parameters"]},
                 "parameter": _arr({"anyOf": branches}, 6)}, required=["resourceType"])


def _parameters_examples(code: str, definition: Json, facts: ServerFacts) -> dict[str, Json]:
    soon = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT00:00:00Z")
    pat = next(iter(facts.samples.get("Patient", [])), {"id": "x"})
    params: list[Json] = []
    names = {p["name"] for p in _op_inputs(definition)}
    if "start" in names:
        params.append({"name": "start", "valueDateTime": soon})
    if "patient" in names:
        params.append({"name": "patient", "valueString": f"Patient/{pat['id']}"})
    if "appointment" in names and facts.proposed is not None:
        params.append({"name": "appointment", "resource": facts.proposed})
    if "_count" in names:
        params.append({"name": "_count", "valueInteger": 3})
    out = {"typical": {"value": {"resourceType": "Parameters", "parameter": params}}}
    if code in ("hold", "book"):
        out["by-id"] = {"value": {"resourceType": "Parameters", "parameter": [
            {"name": "appointment-id", "valueString": "appt-emma-johnson-cancelled"},
            {"name": "patient", "valueString": f"Patient/{pat['id']}"}]}}
    return out


def _query_param(name: str, examples: list[str], required: bool = False) -> Json:
    """A query parameter drawn from its examples or any string (hypothesis picks both)."""
    values = list(dict.fromkeys(str(e) for e in examples if e != ""))
    schema: Json = {"anyOf": [{"type": "string", "enum": values}, {"type": "string"}]} \
        if values else {"type": "string"}
    return {"name": name, "in": "query", "required": required, "schema": schema}


def _header(name: str, examples: list[str]) -> Json:
    return {"name": name, "in": "header", "required": False, "schema": _s(examples)}


def _search_params(res: Json, facts: ServerFacts) -> list[Json]:
    """Query parameters of one type's search: its own, a few modifiers, the result ones."""
    out: list[Json] = []
    refs = facts.references()
    for sp in res.get("searchParam", []):
        name, ptype = sp["name"], sp["type"]
        examples = [*refs[:6], "x"] if ptype == "reference" else _VALUE_EXAMPLES.get(ptype, ["x"])
        out.append(_query_param(name, list(examples)))
        out.append(_query_param(f"{name}:missing", ["true", "false", "maybe"]))
        out += [_query_param(f"{name}:{m}", list(examples)) for m in _MODIFIERS.get(ptype, [])]
    if any(sp["type"] == "reference" for sp in res.get("searchParam", [])):
        first = next(sp["name"] for sp in res["searchParam"] if sp["type"] == "reference")
        out.append(_query_param(f"{first}.name", _STRING_EXAMPLES))
        out.append(_query_param(f"{first}:Patient.name", _STRING_EXAMPLES))
    out.append(_query_param("_has:Appointment:actor:status", ["booked", "x"]))
    seen = {p["name"] for p in out}
    out += [_query_param(k, [*facts.cursors, *v] if k == "_cursor" else v)
            for k, v in RESULT_PARAMS.items() if k not in seen]
    return out


def _form_schema() -> Json:
    return _obj({k: _s(v) for k, v in RESULT_PARAMS.items()}
                | {"name": _s(_STRING_EXAMPLES), "status": _s(_TOKEN_EXAMPLES),
                   "schedule": _s(["Schedule/x"]), "start": _s(_DATE_EXAMPLES)})


def _json_body(schema: Json, examples: dict[str, Json] | None = None,
               media: tuple[str, ...] = ("application/fhir+json",)) -> Json:
    content: Json = {}
    for m in media:
        content[m] = {"schema": schema}
        if examples:
            content[m]["examples"] = examples
    return {"required": True, "content": content}


def _patch_schema() -> Json:
    op = _obj({"op": {"type": "string", "enum": ["add", "remove", "replace", "move", "copy",
                                                 "test", "bogus"]},
               "path": _s(["/status", "/name/0/family", "/id", "/resourceType", "/meta",
                           "/active", "/name/-", "", "/~1", "/name/99"]),
               "from": _s(["/name/0", "/x"]),
               "value": {}}, required=["op", "path"])
    return {"type": "array", "items": op, "maxItems": 4}


_PATCH_EXAMPLES: dict[str, Json] = {
    "replace": {"value": [{"op": "replace", "path": "/active", "value": False}]},
    "id": {"value": [{"op": "replace", "path": "/id", "value": "other"}]},
    "type": {"value": [{"op": "replace", "path": "/resourceType", "value": "Slot"}]},
    "test-fails": {"value": [{"op": "test", "path": "/gender", "value": "x"}]},
    "remove-name": {"value": [{"op": "remove", "path": "/name"}]},
}


def _params_by_name(op: Json) -> dict[tuple[str, str], Json]:
    return {(p["in"], p["name"]): p for p in op.get("parameters", [])}


def _add_params(op: Json, params: list[Json]) -> None:
    have = _params_by_name(op)
    op.setdefault("parameters", [])
    for p in params:
        if (p["in"], p["name"]) not in have:
            op["parameters"].append(p)


def _summary(op: Json) -> str:
    return str(op.get("summary", "")).split(" (")[0]


def augment(facts: ServerFacts) -> Json:
    """The server's schema with parameters, bodies and examples added (see module doc)."""
    schema = copy.deepcopy(facts.openapi)
    paths: Json = schema["paths"]
    prefix = next(p[: -len("/metadata")] for p in paths if p.endswith("/metadata"))
    types = facts.types
    ids = facts.ids()
    # The per-type create operations carry the full element schemas; the generic ones get a
    # small schema (and real resources as examples): a wide body multiplies the coverage
    # phase's cases, and with it the run time.
    resource = small_resource_schema(facts)
    if_match = _header("If-Match", ['W/"1"', 'W/"2"', "1", 'W/"x"', 'W/"\u00b2"',
                                    'W/"99999999999999999999999"'])
    prefer = _header("Prefer", ["return=minimal", "return=representation",
                                "return=OperationOutcome", "handling=strict", "handling=x"])
    for path, item in paths.items():
        for method, op in item.items():
            if not isinstance(op, dict) or method == "parameters":
                continue
            for p in op.get("parameters", []):
                if p.get("in") != "path":
                    continue
                if p["name"] == "rtype":
                    p["schema"] = {"type": "string", "enum": types}
                elif p["name"] == "rid":
                    p["schema"] = {"anyOf": [{"type": "string", "enum": ids or ["x"]},
                                             p.get("schema", {"type": "string"})]}
                elif p["name"] == "vid":
                    p["schema"] = {"anyOf": [{"type": "string", "enum": ["1", "2", *_EDGE_INTS]},
                                             {"type": "string"}]}
                elif p["name"] == "op_id":
                    known = [str(d.get("id")) for d in facts.operations.values()]
                    p["schema"] = {"anyOf": [{"type": "string", "enum": known},
                                             {"type": "string"}]}
            summary = _summary(op)
            if path == prefix and method == "post":
                op["requestBody"] = _json_body(bundle_schema(facts, resource),
                                               _bundle_examples(facts))
                _add_params(op, [prefer])
            elif "$" in path:
                code = path.rsplit("$", 1)[1]
                definition = facts.operations.get(code)
                if definition is None:
                    continue
                if method == "get":
                    _add_params(op, [
                        _query_param(n, [str(v) for v in _op_value_examples(
                            next((p.get("type", "") for p in _op_inputs(definition)
                                  if p["name"] == n), "string"), facts)])
                        for n in _op_names(definition)
                    ])
                else:
                    op["requestBody"] = _json_body(
                        parameters_schema(definition, facts,
                                          small_resource_schema(facts, "Appointment")),
                        _parameters_examples(code, definition, facts))
                    if code == "book":
                        _add_params(op, [_header("Idempotency-Key", ["k1", "k2", ""])])
            elif summary == "search-type" and method == "get":
                union = {p["name"]: p for r in facts.resources
                         for p in _search_params(r, facts)}
                _add_params(op, list(union.values()))
            elif summary == "search-type" and method == "post":
                op["requestBody"] = {"required": False, "content": {
                    "application/x-www-form-urlencoded": {"schema": _form_schema()}}}
            elif summary == "create":
                op["requestBody"] = _json_body(resource, _example_resources(facts, False),
                                               media=("application/fhir+json",
                                                      "application/json"))
                _add_params(op, [_header("If-None-Exist", [
                    "identifier=http://fhirserver.dev/sid/mrn|RH-200001", "_id=x", "bogus=1",
                    "name:exact=Garcia"]), prefer])
            elif summary in ("update", "conditional update"):
                op["requestBody"] = _json_body(resource, _example_resources(facts, True))
                _add_params(op, [if_match, prefer])
                if summary == "conditional update":
                    _add_params(op, [_query_param("_id", ids[:5]),
                                     _query_param("identifier", _TOKEN_EXAMPLES)])
            elif summary == "patch":
                op["requestBody"] = _json_body(_patch_schema(), _PATCH_EXAMPLES,
                                               media=("application/json-patch+json",))
                _add_params(op, [if_match, prefer])
            elif summary in ("delete", "conditional delete"):
                _add_params(op, [if_match])
                if summary == "conditional delete":
                    _add_params(op, [_query_param("_id", ids[:5]),
                                     _query_param("identifier", _TOKEN_EXAMPLES),
                                     _query_param("status", _TOKEN_EXAMPLES)])
            elif summary == "read":
                _add_params(op, [_header("If-None-Match", ['W/"1"', "*"])])
            elif summary.startswith("history"):
                _add_params(op, [_query_param("_since", ["2020-01-01T00:00:00Z", "2020", "x",
                                                         *_EDGE_DATES]),
                                 _query_param("_at", ["2030-01-01T00:00:00Z", "2026-01-01",
                                                      *_EDGE_DATES]),
                                 _query_param("_count", ["0", "2", "x", *_EDGE_INTS]),
                                 _query_param("_before_key", ["2026-01-01T00:00:00+00:00|x",
                                                              "|", "x"])])
    # Per type: search with that type's parameters; create and update with its elements.
    for res in facts.resources:
        rtype = res["type"]
        path = f"{prefix}/{rtype}"
        if path in paths:
            continue
        params = _slot_view_params(facts) if rtype == "Slot" else _search_params(res, facts)
        typed = resource_schema(facts, rtype)
        example = _example_resources(facts, False).get(rtype)
        paths[path] = {
            "get": {"summary": f"search {rtype}", "operationId": f"search_{rtype}",
                    "parameters": params,
                    "responses": {"200": {"description": "searchset Bundle"}}},
            "post": {"summary": f"create {rtype}", "operationId": f"create_{rtype}",
                     "parameters": [prefer],
                     "requestBody": _json_body(typed, {"demo": example} if example else None),
                     "responses": {"201": {"description": "created"}}},
        }
    label_operations(schema)
    return schema


OPERATION_HEADER = "X-Fuzz-Operation"


def label_operations(schema: Json) -> None:
    """Give every operation a required constant header naming it ("METHOD /path"), so the
    HAR log tells which operation sent a request (the server ignores the header; negative
    tests may drop or change it, and then the request is matched by path)."""
    for path, item in schema["paths"].items():
        for method, op in item.items():
            if isinstance(op, dict) and method != "parameters":
                op.setdefault("parameters", []).append({
                    "name": OPERATION_HEADER, "in": "header", "required": True,
                    "schema": {"type": "string", "enum": [f"{method.upper()} {path}"]}})


def _slot_view_params(facts: ServerFacts) -> list[Json]:
    """`GET /Slot?schedule=..`: the availability view (generated slots), schedule required.

    Only the parameters the view understands, so that most generated requests take that
    path; other Slot parameters are exercised through `GET /{rtype}`.
    """
    sched = [f"Schedule/{s['id']}" for s in facts.samples.get("Schedule", [])[:3]]
    soon = datetime.now(UTC) + timedelta(days=1)
    return [
        _query_param("schedule", [*sched, ",".join(sched), "Schedule/x,", "", "x/y/z"],
                     required=True),
        _query_param("start", [f"ge{soon:%Y-%m-%d}", f"lt{soon + timedelta(days=3):%Y-%m-%d}",
                               f"eq{soon:%Y-%m-%d}", f"gt{soon:%Y-%m-%dT%H:%M:%S}Z",
                               *_DATE_EXAMPLES]),
        _query_param("status", ["free", "busy", "busy-tentative", "busy-unavailable",
                                "free,busy", ""]),
        _query_param("service-type", [*_TOKEN_EXAMPLES, "TELEHEALTH"]),
        _query_param("_count", RESULT_PARAMS["_count"]),
        _query_param("_cursor", [*facts.cursors[:3], *RESULT_PARAMS["_cursor"]]),
        _query_param("_format", RESULT_PARAMS["_format"]),
    ]


def route_regex(template: str) -> re.Pattern[str]:
    """A regex matching the concrete (percent-decoded) paths of a path template."""
    parts = re.split(r"(\{[^}]+\})", template)
    body = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(f"^{body}/?$")
