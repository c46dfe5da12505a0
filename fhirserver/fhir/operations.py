"""Operation inputs parsed from their OperationDefinitions in capability/.

One file per operation declares names, types, cardinality and aliases (Argonaut names via
the parameter-alias extension); the same file is served from /metadata, so there is no
second list to keep in sync.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

import orjson

from fhirserver.fhir.errors import BadRequest, NotFound
from fhirserver.paths import project_dir

ALIAS_URL = "http://fhirserver.dev/StructureDefinition/parameter-alias"
_PRIMITIVE_VALUE = {
    "string": "valueString",
    "uri": "valueUri",
    "dateTime": "valueDateTime",
    "instant": "valueInstant",
    "integer": "valueInteger",
    "boolean": "valueBoolean",
    "code": "valueCode",
    "id": "valueId",
}


@dataclass(frozen=True)
class ParamDef:
    """One input parameter of an operation."""

    name: str
    type: str
    min: int
    max: int | None  # None = unbounded
    aliases: tuple[str, ...]


@dataclass(frozen=True)
class Operation:
    """An OperationDefinition and its input parameters by name and alias."""

    code: str
    definition: dict[str, Any]
    inputs: dict[str, ParamDef]
    by_alias: dict[str, str]

    def canonical(self, name: str) -> str | None:
        """The declared name of a parameter given its name or alias."""
        if name in self.inputs:
            return name
        return self.by_alias.get(name)


@cache
def operations() -> dict[str, Operation]:
    """Every OperationDefinition in capability/, by operation code."""
    out: dict[str, Operation] = {}
    for path in sorted(project_dir("capability").glob("OperationDefinition-*.json")):
        definition = orjson.loads(path.read_bytes())
        inputs: dict[str, ParamDef] = {}
        aliases: dict[str, str] = {}
        for p in definition.get("parameter", []):
            if p["use"] != "in":
                continue
            alias_names = tuple(
                e["valueString"] for e in p.get("extension", []) if e.get("url") == ALIAS_URL
            )
            inputs[p["name"]] = ParamDef(
                name=p["name"],
                type=p.get("type", "string"),
                min=int(p["min"]),
                max=None if p["max"] == "*" else int(p["max"]),
                aliases=alias_names,
            )
            for a in alias_names:
                aliases[a] = p["name"]
        out[definition["code"]] = Operation(definition["code"], definition, inputs, aliases)
    return out


def get_operation(code: str) -> Operation:
    """The operation with this code; NotFound when the server has none."""
    op = operations().get(code)
    if op is None:
        raise NotFound(f"operation ${code} is not supported")
    return op


def _convert(param: ParamDef, raw: str) -> Any:
    if param.type == "integer":
        digits = raw[1:] if raw.startswith("-") else raw
        if not (digits.isascii() and digits.isdigit()):
            raise BadRequest(f"parameter {param.name} must be an integer, got {raw!r}")
        return int(raw)
    if param.type == "boolean":
        if raw not in ("true", "false"):
            raise BadRequest(f"parameter {param.name} must be true or false, got {raw!r}")
        return raw == "true"
    if param.type in ("dateTime", "instant"):
        try:
            ts = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            if ts.tzinfo is not None:
                ts.astimezone(UTC)  # OverflowError: 0001-01-01T00:00:00+14:00 is year 0 in UTC
        except (ValueError, OverflowError):
            raise BadRequest(
                f"parameter {param.name} must be a FHIR dateTime, got {raw!r}"
            ) from None
        return raw
    if param.type not in _PRIMITIVE_VALUE:
        raise BadRequest(f"parameter {param.name} ({param.type}) can only be sent in a POST body")
    if raw == "":
        raise BadRequest(f"parameter {param.name} is empty")
    return raw


def _check_cardinality(op: Operation, values: dict[str, list[Any]]) -> dict[str, list[Any]]:
    for p in op.inputs.values():
        n = len(values.get(p.name, []))
        if n < p.min:
            raise BadRequest(f"${op.code} requires parameter {p.name}")
        if p.max is not None and n > p.max:
            raise BadRequest(f"${op.code} parameter {p.name} may appear at most {p.max} time(s)")
    return values


def parse_query(op: Operation, params: Iterable[tuple[str, str]]) -> dict[str, list[Any]]:
    """Inputs from a GET query string (primitive parameters only; commas are not split)."""
    values: dict[str, list[Any]] = {}
    for name, raw in params:
        if name in ("_format", "_pretty"):
            continue
        canonical = op.canonical(name)
        if canonical is None:
            raise BadRequest(f"${op.code} has no parameter {name!r}")
        values.setdefault(canonical, []).append(_convert(op.inputs[canonical], raw))
    return _check_cardinality(op, values)


def parse_parameters(op: Operation, body: object) -> dict[str, list[Any]]:
    """Inputs from a POSTed Parameters resource."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise BadRequest(f"${op.code} takes a Parameters resource in a POST body")
    values: dict[str, list[Any]] = {}
    for i, entry in enumerate(body.get("parameter") or []):
        where = f"Parameters.parameter[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise BadRequest(f"{where} needs a name", expression=[where])
        canonical = op.canonical(entry["name"])
        if canonical is None:
            raise BadRequest(f"${op.code} has no parameter {entry['name']!r}", expression=[where])
        param = op.inputs[canonical]
        if "resource" in entry:
            resource = entry["resource"]
            if not isinstance(resource, dict) or resource.get("resourceType") != param.type:
                raise BadRequest(f"{where} must carry a {param.type}", expression=[where])
            value: Any = resource
        else:
            found = [k for k in entry if k.startswith("value")]
            if len(found) != 1:
                raise BadRequest(f"{where} needs exactly one value[x]", expression=[where])
            raw = entry[found[0]]
            value = _convert(param, str(raw).lower() if isinstance(raw, bool) else str(raw))
        values.setdefault(canonical, []).append(value)
    return _check_cardinality(op, values)


def first(values: dict[str, list[Any]], name: str, default: Any = None) -> Any:
    """The first value of a parameter, or `default`."""
    found = values.get(name)
    return found[0] if found else default
