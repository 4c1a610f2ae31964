"""Backward compatibility of JSON Schemas: may consumers built on `old` read what `new` produces,
and may producers built on `old` still write what `new` accepts?

Flagged: a removed field, a narrowed type (fewer JSON types, fewer enum values, a changed const),
and a new required field.
"""

from __future__ import annotations

from typing import Any


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/$defs/"), ref
        node = root["$defs"][ref.removeprefix("#/$defs/")]
    return node


def _variants(node: dict[str, Any], root: dict[str, Any]) -> list[dict[str, Any]]:
    node = _resolve(node, root)
    for key in ("anyOf", "oneOf"):
        if key in node:
            return [v for sub in node[key] for v in _variants(sub, root)]
    return [node]


def _types(node: dict[str, Any], root: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    for v in _variants(node, root):
        t = v.get("type")
        if isinstance(t, list):
            out.update(t)
        elif t:
            out.add(t)
        elif "const" in v or "enum" in v:
            out.add("enum")
        else:
            out.add("any")
    if "integer" in out and "number" in out:
        out.discard("integer")
    return out


def _enum(node: dict[str, Any], root: dict[str, Any]) -> set[Any] | None:
    values: set[Any] = set()
    for v in _variants(node, root):
        if "const" in v:
            values.add(v["const"])
        elif "enum" in v:
            values.update(v["enum"])
        elif v.get("type") != "null":
            return None  # open-ended variant: any value
    return values


def check(
    old: dict[str, Any],
    new: dict[str, Any],
    path: str = "",
    old_root: dict[str, Any] | None = None,
    new_root: dict[str, Any] | None = None,
) -> list[str]:
    old_root = old_root or old
    new_root = new_root or new
    problems: list[str] = []
    o, n = _resolve(old, old_root), _resolve(new, new_root)
    ot, nt = _types(o, old_root), _types(n, new_root)
    if "any" not in nt and not ot <= nt | ({"integer"} if "number" in nt else set()):
        problems.append(f"{path or '<root>'}: type narrowed from {sorted(ot)} to {sorted(nt)}")
    oe, ne = _enum(o, old_root), _enum(n, new_root)
    if ne is not None and (oe is None or not oe <= ne):
        problems.append(f"{path or '<root>'}: allowed values narrowed from {oe} to {sorted(map(str, ne))}")
    o_obj = next((v for v in _variants(o, old_root) if "properties" in v), None)
    n_obj = next((v for v in _variants(n, new_root) if "properties" in v), None)
    if o_obj and n_obj:
        for name, sub in o_obj["properties"].items():
            p = f"{path}.{name}" if path else name
            if name not in n_obj["properties"]:
                problems.append(f"{p}: field removed")
            else:
                problems += check(sub, n_obj["properties"][name], p, old_root, new_root)
        added_required = set(n_obj.get("required", [])) - set(o_obj.get("required", []))
        for name in sorted(added_required):
            problems.append(f"{path + '.' if path else ''}{name}: new required field")
    o_items = next((v["items"] for v in _variants(o, old_root) if "items" in v), None)
    n_items = next((v["items"] for v in _variants(n, new_root) if "items" in v), None)
    if o_items and n_items:
        problems += check(o_items, n_items, f"{path}[]", old_root, new_root)
    return problems
