"""Validate incoming FHIR R4 resources (JSON already parsed).

Two passes:

1. A strict JSON walk, driven by a per-model-class schema compiled once from the
   fhir.resources R4B models. It rejects what pydantic's lax mode lets through or
   drops: unknown elements, JSON type mismatches (``"5"`` for an integer, ``1`` for a
   boolean, a number for a date), ``null``, empty strings/arrays/objects, bad ids;
   and it checks the required terminology bindings (see bindings.py). It also builds
   the copy of the body that we return.
2. ``model_validate`` of the fhir.resources R4B class: cardinality, choice types,
   primitive regexes, date validity.

Both passes report every problem they find as one OperationOutcome issue with a
FHIRPath ``expression``. Then the R4 invariants we rely on (app-1..app-4, start < end)
are checked on the model (422).

The returned dict is the body as given (a fresh copy): fhir.resources would reformat
instants (``.000Z`` -> ``Z``, nanoseconds truncated), so we never return its dump.
"""

from __future__ import annotations

import datetime as dt
import re
import typing
from dataclasses import dataclass, field
from types import UnionType
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir_core.constraints import FHIR_PRIMITIVES_MAPS
from fhir_core.types import FhirBase, FhirElementOrResourceBase
from pydantic import ValidationError

from fhirserver.fhir import bindings
from fhirserver.fhir.errors import BadRequest, Unprocessable
from fhirserver.fhir.types import RESOURCE_TYPES

__all__ = ["validate_resource"]

MAX_ISSUES = 50

_ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")

# JSON value kinds
_STR, _BOOL, _INT, _DEC, _COMPLEX, _RESOURCE = range(6)
_INT_TYPES = frozenset({"integer", "positiveInt", "unsignedInt"})
_KIND_NAMES = {
    _STR: "a string",
    _BOOL: "a boolean",
    _INT: "an integer",
    _DEC: "a number",
    _COMPLEX: "an object",
    _RESOURCE: "a resource object",
}


@dataclass(slots=True)
class _Field:
    key: str  # JSON property name
    name: str  # FHIRPath name (``_status`` -> ``status``)
    is_list: bool
    kind: int
    fhir_type: str  # primitive type name, or model class name
    model: Any = None  # fhir.resources model class for complex kinds
    child_def: str = ""  # element definition path of the child node
    value_set: str | None = None
    codes: frozenset[str] | None = None


@dataclass(slots=True)
class _Node:
    fields: dict[str, _Field] = field(default_factory=dict)
    is_resource: bool = False


_NODES: dict[tuple[Any, str], _Node] = {}
_RESOURCE_MODELS: dict[str, Any] = {}


def _model_for_resource(resource_type: str) -> Any:
    """The R4B model class for a resource type name, or None when there is none."""
    try:
        return _RESOURCE_MODELS[resource_type]
    except KeyError:
        pass
    model: Any = None
    try:
        candidate = get_fhir_model_class(resource_type)
    except ValueError:
        candidate = None
    if (
        candidate is not None
        and candidate.has_resource_base()
        and resource_type not in ("Resource", "DomainResource")
    ):
        model = candidate
    _RESOURCE_MODELS[resource_type] = model
    return model


def _strip_optional(ann: Any) -> Any:
    origin = typing.get_origin(ann)
    if origin is typing.Union or origin is UnionType:
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return ann


def _is_component(model: Any) -> bool:
    """True for backbone components (AppointmentParticipant), False for types/resources."""
    module_leaf = str(model.__module__).rsplit(".", 1)[-1]
    return bool(module_leaf != model.__name__.lower())


def _compile_field(key: str, ann: Any, def_path: str) -> _Field | None:
    ann = _strip_optional(ann)
    is_list = typing.get_origin(ann) is list
    if is_list:
        ann = _strip_optional(typing.get_args(ann)[0])
    name = key[1:] if key.startswith("_") else key
    if isinstance(ann, type) and issubclass(ann, FhirBase):
        model = ann.get_model_klass()
        if issubclass(ann, FhirElementOrResourceBase):
            return _Field(key, name, is_list, _RESOURCE, model.__name__, model)
        child_def = f"{def_path}.{name}" if _is_component(model) else str(model.__resource_type__)
        return _Field(key, name, is_list, _COMPLEX, model.__name__, model, child_def)
    try:
        fhir_type = FHIR_PRIMITIVES_MAPS.get(ann)
    except TypeError:  # unhashable annotation
        fhir_type = None
    if fhir_type is None:
        return None
    if fhir_type == "boolean":
        kind = _BOOL
    elif fhir_type in _INT_TYPES:
        kind = _INT
    elif fhir_type == "decimal":
        kind = _DEC
    else:
        kind = _STR  # string-like, dates, integer64 (a JSON string)
    f = _Field(key, name, is_list, kind, fhir_type)
    binding = bindings.binding_for(f"{def_path}.{name}")
    if binding is not None:
        f.value_set, f.codes = binding
    return f


def _node(model: Any, def_path: str) -> _Node:
    cache_key = (model, def_path)
    node = _NODES.get(cache_key)
    if node is not None:
        return node
    node = _Node(is_resource=bool(model.has_resource_base()))
    for attr, info in model.model_fields.items():
        key = info.alias or attr
        if key in ("fhir_comments", "resource_type", "resourceType"):
            continue
        compiled = _compile_field(key, info.annotation, def_path)
        if compiled is not None:
            node.fields[key] = compiled
    _NODES[cache_key] = node
    return node


def _issue(code: str, diagnostics: str, expression: str) -> dict[str, Any]:
    return {
        "severity": "error",
        "code": code,
        "diagnostics": diagnostics,
        "expression": [expression],
    }


class _Walker:
    """One strict pass over the JSON; collects issues and returns a copy."""

    __slots__ = ("issues",)

    def __init__(self) -> None:
        self.issues: list[dict[str, Any]] = []

    def add(self, code: str, diagnostics: str, expression: str) -> None:
        if len(self.issues) < MAX_ISSUES:
            self.issues.append(_issue(code, diagnostics, expression))

    def resource(self, obj: dict[str, Any], path: str) -> dict[str, Any]:
        rt = obj.get("resourceType")
        if not isinstance(rt, str) or not rt:
            self.add("structure", f"{path}: missing resourceType", path)
            return dict(obj)
        model = _model_for_resource(rt)
        if model is None:
            self.add("structure", f"{path}: unknown resourceType '{rt}'", path)
            return dict(obj)
        return self.obj(obj, _node(model, rt), path)

    def obj(self, obj: dict[str, Any], node: _Node, path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if not obj:
            self.add("structure", f"{path}: empty object is not allowed", path)
            return out
        fields = node.fields
        for key, value in obj.items():
            f = fields.get(key)
            if f is None:
                if key == "resourceType" and node.is_resource:
                    out[key] = value
                else:
                    self.add("structure", f"{path}.{key}: unknown element", f"{path}.{key}")
                continue
            p = f"{path}.{f.name}"
            if value is None:
                self.add("structure", f"{p}: null is not allowed", p)
                continue
            if f.is_list:
                if not isinstance(value, list):
                    self.add("structure", f"{p}: expected an array", p)
                    continue
                if not value:
                    self.add("structure", f"{p}: empty array is not allowed", p)
                    continue
                # nulls inside arrays are legal only for primitives paired with `_x`
                nullable = f.kind != _COMPLEX or key.startswith("_")
                items: list[Any] = []
                for i, item in enumerate(value):
                    ip = f"{p}[{i}]"
                    if item is None:
                        if not nullable:
                            self.add("structure", f"{ip}: null is not allowed", ip)
                        items.append(None)
                    else:
                        items.append(self.value(item, f, ip))
                out[key] = items
            else:
                if isinstance(value, list):
                    self.add("structure", f"{p}: expected a single value, not an array", p)
                    continue
                out[key] = self.value(value, f, p)
        return out

    def value(self, value: Any, f: _Field, path: str) -> Any:
        kind = f.kind
        if kind == _STR:
            if type(value) is not str:
                self._type_error(f, path, value)
            elif not value:
                self.add("value", f"{path}: empty string is not allowed", path)
            elif f.codes is not None and value not in f.codes:
                self.add(
                    "code-invalid",
                    f"{path}: '{value}' is not a valid code (required binding to {f.value_set})",
                    path,
                )
            elif f.fhir_type == "id" and not _ID_RE.fullmatch(value):
                self.add("value", f"{path}: invalid id '{value[:80]}'", path)
            return value
        if kind == _COMPLEX:
            if type(value) is not dict:
                self._type_error(f, path, value)
                return value
            return self.obj(value, _node(f.model, f.child_def), path)
        if kind == _RESOURCE:
            if type(value) is not dict:
                self._type_error(f, path, value)
                return value
            return self.resource(value, path)
        if kind == _BOOL:
            ok = type(value) is bool
        elif kind == _INT:
            ok = type(value) is int
        else:
            ok = type(value) in (int, float)
        if not ok:
            self._type_error(f, path, value)
        return value

    def _type_error(self, f: _Field, path: str, value: Any) -> None:
        self.add(
            "structure",
            f"{path}: expected {_KIND_NAMES[f.kind]} ({f.fhir_type}), "
            f"got {type(value).__name__} {str(value)[:40]!r}",
            path,
        )


_IDENT = re.compile(r"_?[A-Za-z][A-Za-z0-9_]*")


def _loc_to_path(root: str, loc: tuple[int | str, ...]) -> str:
    parts = [root]
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif _IDENT.fullmatch(item) and item not in ("root", "resource_type"):
            parts.append("." + (item[1:] if item.startswith("_") else item))
    return "".join(parts)


def _pydantic_issues(root: str, exc: ValidationError) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for err in exc.errors(include_url=False, include_input=False):
        etype = str(err["type"])
        path = _loc_to_path(root, tuple(err["loc"]))
        if etype == "extra_forbidden":
            out.append(_issue("structure", f"{path}: unknown element", path))
        elif etype == "missing" or etype.endswith(".missing"):
            out.append(_issue("required", f"{path}: required element is missing (min 1)", path))
        elif "is expected from this list" in str(err["msg"]):
            if "multiple" in str(err["msg"]):
                text = "only one choice-type element (value[x], effective[x], ...) may be present"
            else:
                text = "a required choice-type element (value[x], ...) is missing"
            out.append(_issue("value", f"{path}: {text}", path))
        elif etype.endswith("_type"):
            out.append(_issue("structure", f"{path}: {err['msg']:.200}", path))
        else:
            out.append(_issue("value", f"{path}: {err['msg']:.200}", path))
    return out


def _covered(expr: str, seen: set[str]) -> bool:
    """True when `expr`, an ancestor or a descendant of it already has an issue."""
    for other in seen:
        if other == expr:
            return True
        if other.startswith(expr) and other[len(expr)] in ".[":
            return True  # an issue inside `expr` explains this one
        if expr.startswith(other) and expr[len(other)] in ".[":
            return True  # this one is inside an element already reported
    return False


def _raise(issues: list[dict[str, Any]], cls: type[BadRequest] | type[Unprocessable]) -> None:
    first, rest = issues[0], issues[1:MAX_ISSUES]
    raise cls(first["diagnostics"], expression=first["expression"], code=first["code"], issues=rest)


def validate_resource(body: object, expected_type: str | None = None) -> dict[str, Any]:
    """Validate a FHIR R4 resource (JSON already parsed) and return its normalised JSON dict."""
    if not isinstance(body, dict):
        raise BadRequest(
            f"expected a FHIR resource (JSON object), got {type(body).__name__}",
            code="structure",
        )
    rt = body.get("resourceType")
    if not isinstance(rt, str) or not rt:
        raise BadRequest("missing or invalid resourceType", code="structure")
    if rt not in RESOURCE_TYPES:
        raise BadRequest(f"resource type '{rt[:64]}' is not supported", code="not-supported")
    if expected_type is not None and rt != expected_type:
        raise BadRequest(
            f"resourceType '{rt}' does not match the expected type '{expected_type}'",
            code="invalid",
            expression=[rt],
        )
    model = _model_for_resource(rt)
    walker = _Walker()
    try:
        out = walker.obj(body, _node(model, rt), rt)
    except RecursionError:
        raise BadRequest(f"{rt}: resource is nested too deeply", code="too-costly") from None
    issues = walker.issues
    try:
        instance = model.model_validate(body)
    except ValidationError as exc:
        seen = {i["expression"][0] for i in issues}
        for issue in _pydantic_issues(rt, exc):
            expr = issue["expression"][0]
            if not _covered(expr, seen):
                issues.append(issue)
                seen.add(expr)
        instance = None
    except Exception as exc:  # fhir.resources can raise non-pydantic errors on odd input
        if not issues:
            issues.append(_issue("structure", f"{rt}: invalid resource ({exc!r:.200})", rt))
        instance = None
    if issues:
        _raise(issues, BadRequest)
    invariant_issues = _INVARIANTS.get(rt, _no_invariants)(instance, body)
    if invariant_issues:
        _raise(invariant_issues, Unprocessable)
    return out


# --- invariants (422) --------------------------------------------------------


def _no_invariants(_resource: Any, _body: dict[str, Any]) -> list[dict[str, Any]]:
    return []


def _as_datetime(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):  # leap second kept as a string by fhir.resources
        try:
            return dt.datetime.fromisoformat(value.replace(":60", ":59", 1))
        except ValueError:
            return None
    return None


def _check_start_end(rt: str, resource: Any, body: dict[str, Any]) -> list[dict[str, Any]]:
    start, end = _as_datetime(resource.start), _as_datetime(resource.end)
    if start is not None and end is not None and end <= start:
        return [
            _issue(
                "invariant",
                f"{rt}.end ({body.get('end')}) must be after {rt}.start ({body.get('start')})",
                f"{rt}.end",
            )
        ]
    return []


_WITHOUT_TIMES = frozenset({"proposed", "cancelled", "waitlist"})


def _appointment_invariants(appt: Any, body: dict[str, Any]) -> list[dict[str, Any]]:
    issues: list[dict[str, Any]] = []
    for i, participant in enumerate(appt.participant or []):
        if participant.type is None and participant.actor is None:
            path = f"Appointment.participant[{i}]"
            issues.append(
                _issue(
                    "invariant",
                    f"app-1: {path}: either the type or actor on the participant SHALL be "
                    "specified",
                    path,
                )
            )
    has_start, has_end = appt.start is not None, appt.end is not None
    if has_start != has_end:
        missing = "Appointment.end" if has_start else "Appointment.start"
        issues.append(
            _issue("invariant", "app-2: either start and end are specified, or neither", missing)
        )
    if not (has_start and has_end) and appt.status not in _WITHOUT_TIMES:
        issues.append(
            _issue(
                "invariant",
                f"app-3: only proposed, cancelled or waitlist appointments can be missing "
                f"start/end dates (status is '{appt.status}')",
                "Appointment.start" if not has_start else "Appointment.end",
            )
        )
    if appt.cancelationReason is not None and appt.status not in ("cancelled", "noshow"):
        issues.append(
            _issue(
                "invariant",
                "app-4: cancelationReason is only used for appointments that have been "
                f"cancelled, or noshow (status is '{appt.status}')",
                "Appointment.cancelationReason",
            )
        )
    issues.extend(_check_start_end("Appointment", appt, body))
    return issues


def _slot_invariants(slot: Any, body: dict[str, Any]) -> list[dict[str, Any]]:
    return _check_start_end("Slot", slot, body)


_INVARIANTS: dict[str, typing.Callable[[Any, dict[str, Any]], list[dict[str, Any]]]] = {
    "Appointment": _appointment_invariants,
    "Slot": _slot_invariants,
}
