"""Contracts: committed schemas match the models, and the compatibility check catches breaking changes."""

from __future__ import annotations

import copy
import json

import pytest

from contracts import compat
from contracts.catalog import CATALOG, TOPICS_BY_NAME, all_topic_names
from contracts.events import EVENT_MODELS
from contracts.export import export_schemas, render, schema_of, schema_path


def test_committed_schemas_match_models():
    assert export_schemas(check=True) == []


@pytest.mark.parametrize("model", EVENT_MODELS, ids=lambda m: m.TYPE)
def test_each_committed_schema_is_compatible_with_its_model(model):
    committed = json.loads(schema_path(model).read_text())
    assert compat.check(committed, schema_of(model)) == []
    assert render(committed) == render(schema_of(model))


def test_catalog_is_complete_and_unique():
    assert len({t.name for t in CATALOG}) == len(CATALOG)
    assert {t.model for t in CATALOG} == set(EVENT_MODELS)
    names = [n for n, _ in all_topic_names()]
    assert len(names) == len(set(names))
    assert all(TOPICS_BY_NAME[t.name].partitions >= 1 for t in CATALOG)


BASE = {
    "type": "object",
    "properties": {
        "a": {"type": "string"},
        "n": {"type": "integer"},
        "kind": {"enum": ["x", "y"], "type": "string"},
        "items": {"type": "array", "items": {"$ref": "#/$defs/Line"}},
        "opt": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
    },
    "required": ["a", "n", "kind", "items"],
    "$defs": {
        "Line": {
            "type": "object",
            "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
            "required": ["sku", "qty"],
        }
    },
}


def changed(fn) -> dict:
    s = copy.deepcopy(BASE)
    fn(s)
    return s


def test_compatible_changes_pass():
    def add_optional(s):
        s["properties"]["extra"] = {"type": "string"}

    def widen_enum(s):
        s["properties"]["kind"]["enum"].append("z")

    assert compat.check(BASE, changed(add_optional)) == []
    assert compat.check(BASE, changed(widen_enum)) == []
    assert compat.check(BASE, BASE) == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda s: s["properties"].pop("a"), "a: field removed"),
        (lambda s: s["$defs"]["Line"]["properties"].pop("qty"), "items[].qty: field removed"),
        (lambda s: s["properties"]["n"].update(type="string"), "n: type narrowed"),
        (lambda s: s["properties"]["opt"].update(anyOf=[{"type": "string"}]), "opt: type narrowed"),
        (lambda s: s["properties"]["kind"].update(enum=["x"]), "kind: allowed values narrowed"),
        (lambda s: (s["properties"].update(b={"type": "string"}), s["required"].append("b")), "b: new required field"),
        (lambda s: s["required"].append("opt"), "opt: new required field"),
    ],
)
def test_breaking_changes_are_caught(mutate, expected):
    problems = compat.check(BASE, changed(mutate))
    assert any(p.startswith(expected) for p in problems), problems


def test_readme_topic_table_is_generated_from_the_catalog():
    from pathlib import Path

    from contracts.docs import render_readme

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert render_readme(readme) == readme, "README.md topic table is stale: run `make docs`"
