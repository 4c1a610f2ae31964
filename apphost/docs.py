"""AsyncAPI (from the topic catalog and each service's consumers) and OpenAPI (from FastAPI) documents
for every service. `make docs` writes them under docs/; a test fails when they drift."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import SecretStr

from returnflow.asyncapi import asyncapi_for, render

DOCS = Path(__file__).parents[1] / "docs"


def openapi_for(spec: Any) -> dict[str, Any]:
    from returnflow.service import create_app
    from returnflow.settings import Settings

    # Building the app connects to nothing; the endpoints only need to be set.
    settings = Settings(database_url=SecretStr("postgresql://docs/docs"), kafka_bootstrap="docs:9092")
    doc: dict[str, Any] = create_app(spec, settings).openapi()
    return doc


def all_specs() -> dict[str, Any]:
    from apphost import registry

    return dict(registry.specs())


def generated() -> dict[Path, str]:
    out: dict[Path, str] = {}
    for name, spec in all_specs().items():
        out[DOCS / "asyncapi" / f"{name}.json"] = render(asyncapi_for(spec))
        out[DOCS / "openapi" / f"{name}.json"] = render(openapi_for(spec))
    return out


def write_docs() -> list[Path]:
    changed = []
    for path, text in generated().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            changed.append(path)
    return changed
