"""Export every contract as JSON Schema under contracts/schemas/ (committed), refusing breaking changes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from contracts import compat
from contracts.events import EVENT_MODELS

SCHEMA_DIR = Path(__file__).parent / "schemas"


def schema_of(model: Any) -> dict[str, Any]:
    schema: dict[str, Any] = model.model_json_schema(mode="serialization")
    schema["$id"] = f"https://returnflow.dev/schemas/{model.TYPE}.v{model.model_fields['version'].default}.json"
    return schema


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def schema_path(model: Any) -> Path:
    return SCHEMA_DIR / f"{model.TYPE}.json"


def export_schemas(check: bool = False) -> list[str]:
    """Write (or with check=True, compare) every schema. Returns the problems found."""
    problems: list[str] = []
    SCHEMA_DIR.mkdir(exist_ok=True)
    for model in EVENT_MODELS:
        path = schema_path(model)
        new = schema_of(model)
        if path.exists():
            old = json.loads(path.read_text())
            breaking = compat.check(old, new)
            problems += [f"{model.TYPE}: backward-incompatible: {p}" for p in breaking]
            if check and render(old) != render(new):
                problems.append(f"{model.TYPE}: {path.name} differs from the model (run `make schemas`)")
        elif check:
            problems.append(f"{model.TYPE}: {path.name} is missing (run `make schemas`)")
        if not check and not problems:
            path.write_text(render(new))
    return problems
