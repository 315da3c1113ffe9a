"""Strict JSON schemas from pydantic models, and a validator for the subset they use.

Structured-output endpoints in strict mode accept a subset of JSON Schema:
every object lists all its properties as required and forbids others. The
validator covers the same subset (type, properties, required,
additionalProperties, items, enum, const, anyOf, $ref/$defs, min/max items and
length) so a reply can be checked without another dependency.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

_DROP_KEYS = {"title", "default", "examples"}


def strict_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema made strict: all properties required, no extra ones, no titles/defaults."""
    return _tighten(copy.deepcopy(model.model_json_schema()))


def _tighten(node: Any) -> Any:
    """Walk schema nodes structurally, so a property that happens to be called "type" or "properties" is safe."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS:
            continue
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            out[key] = {name: _tighten(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = _tighten(value)
        elif key in ("anyOf", "allOf", "oneOf", "prefixItems") and isinstance(value, list):
            out[key] = [_tighten(sub) for sub in value]
        else:
            out[key] = value
    if out.get("type") == "object" or "properties" in out:
        out["type"] = "object"
        out["properties"] = out.get("properties", {})
        out["required"] = list(out["properties"])
        out["additionalProperties"] = False
    return out


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def _is_type(value: Any, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES.get(name, (object,)))


def schema_errors(instance: Any, schema: dict[str, Any], *, limit: int = 10) -> list[str]:
    """Where ``instance`` breaks ``schema``, as short messages with a JSON path; empty when valid."""
    errors: list[str] = []
    root = schema

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while "$ref" in node and seen < 20:
            ref = node["$ref"]
            if not ref.startswith("#/"):
                raise ValueError(f"only local $ref is supported, got {ref!r}")
            target: Any = root
            for part in ref[2:].split("/"):
                target = target[part]
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            seen += 1
        return node

    def visit(value: Any, node: dict[str, Any], path: str) -> None:
        if len(errors) >= limit:
            return
        node = resolve(node)
        if "anyOf" in node:
            if not any(not _collect(value, option, path) for option in node["anyOf"]):
                errors.append(f"{path}: matches none of the allowed forms")
            return
        expected = node.get("type")
        if expected is not None:
            names = expected if isinstance(expected, list) else [expected]
            if not any(_is_type(value, name) for name in names):
                errors.append(f"{path}: expected {' or '.join(names)}, got {type(value).__name__}")
                return
        if "enum" in node and value not in node["enum"]:
            errors.append(f"{path}: {value!r} is not one of {node['enum']!r}")
        if "const" in node and value != node["const"]:
            errors.append(f"{path}: must be {node['const']!r}")
        if isinstance(value, str):
            if "minLength" in node and len(value) < node["minLength"]:
                errors.append(f"{path}: shorter than {node['minLength']}")
            if "maxLength" in node and len(value) > node["maxLength"]:
                errors.append(f"{path}: longer than {node['maxLength']}")
        if isinstance(value, dict):
            properties = node.get("properties", {})
            for key in node.get("required", []):
                if key not in value:
                    errors.append(f"{path}: missing required property {key!r}")
            extra = node.get("additionalProperties", True)
            for key, item in value.items():
                if key in properties:
                    visit(item, properties[key], f"{path}.{key}")
                elif extra is False:
                    errors.append(f"{path}: unexpected property {key!r}")
                elif isinstance(extra, dict):
                    visit(item, extra, f"{path}.{key}")
        if isinstance(value, list):
            if "minItems" in node and len(value) < node["minItems"]:
                errors.append(f"{path}: fewer than {node['minItems']} items")
            if "maxItems" in node and len(value) > node["maxItems"]:
                errors.append(f"{path}: more than {node['maxItems']} items")
            if isinstance(node.get("items"), dict):
                for index, item in enumerate(value):
                    visit(item, node["items"], f"{path}[{index}]")

    def _collect(value: Any, node: dict[str, Any], path: str) -> list[str]:
        before = len(errors)
        visit(value, node, path)
        found = errors[before:]
        del errors[before:]
        return found

    visit(instance, schema, "$")
    return errors[:limit]
