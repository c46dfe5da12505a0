"""`_summary` and `_elements`: trimmed copies of a resource, tagged SUBSETTED."""

from __future__ import annotations

from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

_MANDATORY = ("resourceType", "id", "meta")
_SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
}


@cache
def summary_elements(resource_type: str) -> frozenset[str]:
    """Top-level elements marked isSummary in the R4 definition of `resource_type`."""
    model = get_fhir_model_class(resource_type)
    names: set[str] = set()
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and extra.get("summary_element_property"):
            alias = info.alias or name
            names.add(alias)
            names.add(f"_{alias}")
    return frozenset(names)


def subset(
    resource: dict[str, Any], summary: str | None, elements: list[str] | None
) -> dict[str, Any]:
    """Apply `_summary` (true|text|data) or `_elements` to one resource."""
    rtype = resource.get("resourceType", "")
    if summary == "true":
        keep = summary_elements(rtype)
        out = {k: v for k, v in resource.items() if k in keep or k in _MANDATORY}
    elif summary == "text":
        out = {k: v for k, v in resource.items() if k in (*_MANDATORY, "text")}
    elif summary == "data":
        out = {k: v for k, v in resource.items() if k != "text"}
    elif elements is not None:
        wanted = {e.split(".")[-1] if "." in e else e for e in elements}
        out = {k: v for k, v in resource.items() if k in wanted or k in _MANDATORY}
    else:
        return resource
    meta = dict(out.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), _SUBSETTED]
    out["meta"] = meta
    return out
