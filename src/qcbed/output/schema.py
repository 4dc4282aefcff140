"""The schema of ``result.json`` (:data:`RESULT_SCHEMA`, JSON Schema draft 2020-12 subset)
and its validator (:func:`validate_result_json`)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import InputError

_NUM = {"type": "number"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_HKL = {"type": "array", "items": {"type": "integer"}, "minItems": 3, "maxItems": 3}
_VEC2 = {"type": "array", "items": _NUM, "minItems": 2, "maxItems": 2}
_VEC3 = {"type": "array", "items": _NUM, "minItems": 3, "maxItems": 3}
_VALUE = {"type": "object", "required": ["value", "esd", "unit"],
          "properties": {"value": _NUM, "esd": _NUM_OR_NULL, "unit": {"type": "string"}}}

#: JSON Schema of ``result.json`` (format ``qcbed-result/1``).
RESULT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://qcbed.org/schema/result-1.json",
    "title": "qcbed refinement result",
    "type": "object",
    "required": ["format", "qcbed_version", "created", "project", "crystal", "voltage_kv",
                 "thickness", "orientation", "structure_factors", "parameters", "chi2",
                 "gof", "dof", "n_used", "r_factor", "zncc", "files"],
    "properties": {
        "format": {"type": "string", "enum": ["qcbed-result/1"]},
        "qcbed_version": {"type": "string"},
        "created": {"type": "string"},
        "project": {"type": "string"},
        "crystal": {"type": "object", "required": ["space_group", "cell"],
                    "properties": {"name": {"type": "string"},
                                   "space_group": {"type": "string"},
                                   "cell": {"type": "array", "items": _NUM, "minItems": 6,
                                            "maxItems": 6}}},
        "voltage_kv": _NUM,
        "thickness": _VALUE,
        "orientation": {
            "type": "object",
            "required": ["zone", "x_axis", "normal", "tilt0", "kt_unit"],
            "properties": {"zone": _VEC3, "x_axis": _VEC3, "normal": _VEC3, "tilt0": _VEC2,
                           "tilt0_esd": {"type": ["array", "null"], "items": _NUM},
                           "kt_unit": {"type": "string"}, "rotation_deg": _NUM, "gl": _NUM,
                           "shift_px": _VEC2, "mirror": {"type": "boolean"}}},
        "structure_factors": {
            "type": "array",
            "items": {"type": "object",
                      "required": ["hkl", "g", "phase_deg", "U", "U_esd", "U_abs", "U_abs_esd",
                                   "U_iam", "U_abs_iam", "Fx", "Fx_iam", "refined"],
                      "properties": {"hkl": _HKL, "g": _NUM, "phase_deg": _NUM, "U": _NUM,
                                     "U_esd": _NUM_OR_NULL, "U_abs": _NUM,
                                     "U_abs_esd": _NUM_OR_NULL, "U_iam": _NUM,
                                     "U_abs_iam": _NUM, "Fe": _NUM, "Fx": _NUM,
                                     "Fx_esd": _NUM_OR_NULL, "Fx_iam": _NUM,
                                     "refined": {"type": "array",
                                                 "items": {"type": "string",
                                                           "enum": ["U", "U_abs", "phase"]}}}}},
        "parameters": {
            "type": "array",
            "items": {"type": "object", "required": ["name", "value", "esd", "unit", "refined"],
                      "properties": {"name": {"type": "string"}, "value": _NUM,
                                     "esd": _NUM_OR_NULL, "unit": {"type": "string"},
                                     "refined": {"type": "boolean"},
                                     "true": _NUM_OR_NULL}}},
        "chi2": _NUM_OR_NULL,
        "gof": {"type": "object", "required": ["metric", "value"],
                "properties": {"metric": {"type": "string"}, "value": _NUM_OR_NULL,
                               "background": {"type": "string"}}},
        "dof": {"type": "integer"},
        "n_used": {"type": "integer"},
        "r_factor": _NUM_OR_NULL,
        "zncc": {"type": "array",
                 "items": {"type": "object", "required": ["hkl", "zncc"],
                           "properties": {"hkl": _HKL, "zncc": _NUM}}},
        "solver": {"type": "object",
                   "description": "what the engine had to do for the final model's "
                                  "directions: re-solved exactly, rejected (NaN, left out "
                                  "of the fit), near-degenerate clusters treated exactly",
                   "properties": {k: {"type": "integer"} for k in
                                  ("directions", "exact_fallback", "rejected", "clustered")}},
        "convergence": {
            "type": ["object", "null"],
            "description": "beam-settings accuracy: convergence_error (max |dI|/I_max "
                           "against all pool beams strong), pool_error (change on pool "
                           "growth), the target and how the settings were chosen",
            "properties": {"convergence_error": _NUM, "pool_error": _NUM_OR_NULL,
                           "accuracy": _NUM_OR_NULL, "converged": {"type": "boolean"},
                           "chosen_by_engine": {"type": "boolean"}}},
        "scale": _NUM,
        "background": {"type": "array", "items": _NUM},
        "correlation": {"type": "object", "required": ["names", "matrix"],
                        "properties": {"names": {"type": "array",
                                                 "items": {"type": "string"}},
                                       "matrix": {"type": "array",
                                                  "items": {"type": "array", "items": _NUM}}}},
        "strong_correlations": {"type": "array"},
        "steps": {"type": "array"},
        "message": {"type": "string"},
        "elapsed_s": _NUM,
        "truth": {"type": "object"},
        "noise_model": {"type": "object", "required": ["gain", "floor", "method"]},
        "error_budget": {"type": "object", "required": ["inputs", "parameters"]},
        "inelastic": {"type": "object", "required": ["model"]},
        "regions": {"type": "object", "required": ["n_regions", "stats"]},
        "datasets": {"type": "array", "minItems": 2,
                     "items": {"type": "object",
                               "required": ["index", "name", "kind", "voltage_kv",
                                            "thickness", "orientation", "chi2", "dof",
                                            "n_used", "r_factor", "scale"],
                               "properties": {"thickness": _VALUE, "chi2": _NUM,
                                              "dof": {"type": "integer"}}}},
        "files": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


# ====================================================================== JSON Schema subset
def validate_json(instance: Any, schema: Mapping[str, Any], path: str = "$") -> None:
    """Validate ``instance`` against a JSON Schema (the subset :data:`RESULT_SCHEMA` uses).

    Supports ``type`` (string or list), ``enum``, ``required``, ``properties``,
    ``additionalProperties`` (schema), ``items``, ``minItems``, ``maxItems``.

    Raises
    ------
    InputError
        At the first violation, with its JSON path as the tag.
    """
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not any(_is_type(instance, t) for t in names):
            raise InputError("wrong JSON type", tag=path, expected=" or ".join(names),
                             found=type(instance).__name__)
    if "enum" in schema and instance not in schema["enum"]:
        raise InputError("value not allowed", tag=path, expected=schema["enum"], found=instance)
    if isinstance(instance, dict):
        for k in schema.get("required", []):
            if k not in instance:
                raise InputError("missing property", tag=f"{path}.{k}", expected="present",
                                 found=None)
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for k, v in instance.items():
            if k in props:
                validate_json(v, props[k], f"{path}.{k}")
            elif isinstance(extra, dict):
                validate_json(v, extra, f"{path}.{k}")
            elif extra is False:
                raise InputError("unexpected property", tag=f"{path}.{k}",
                                 expected=sorted(props), found=k)
    if isinstance(instance, list):
        if "minItems" in schema and len(instance) < schema["minItems"]:
            raise InputError("too few items", tag=path, expected=f"≥ {schema['minItems']}",
                             found=len(instance))
        if "maxItems" in schema and len(instance) > schema["maxItems"]:
            raise InputError("too many items", tag=path, expected=f"≤ {schema['maxItems']}",
                             found=len(instance))
        if "items" in schema:
            for i, v in enumerate(instance):
                validate_json(v, schema["items"], f"{path}[{i}]")


def _is_type(v: Any, t: str) -> bool:
    if t == "null":
        return v is None
    if t == "boolean":
        return isinstance(v, bool)
    if t == "integer":
        return isinstance(v, int) and not isinstance(v, bool)
    if t == "number":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if t == "string":
        return isinstance(v, str)
    if t == "array":
        return isinstance(v, list)
    if t == "object":
        return isinstance(v, dict)
    raise ValueError(f"unknown JSON type {t}")


def validate_result_json(path_or_obj: str | os.PathLike | Mapping[str, Any]) -> dict:
    """Read (if a path) and validate a ``result.json`` against :data:`RESULT_SCHEMA`."""
    if isinstance(path_or_obj, Mapping):
        obj = dict(path_or_obj)
        src = "result.json"
    else:
        src = str(path_or_obj)
        obj = json.loads(Path(path_or_obj).read_text(encoding="utf-8"))
    try:
        validate_json(obj, RESULT_SCHEMA)
    except InputError as exc:
        raise InputError(exc.reason, source=src, tag=exc.tag, expected=exc.expected,
                         found=exc.found) from None
    return obj


