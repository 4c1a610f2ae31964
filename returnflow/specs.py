"""AsyncAPI (from the topic catalog and each service's consumers) and OpenAPI (from FastAPI) documents
for every service. `make docs` writes them under docs/; a test fails when they drift."""

from __future__ import annotations

import json
from importlib import import_module
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pydantic.json_schema import models_json_schema

from contracts.catalog import (
    CATALOG,
    HEADER_CORRELATION_ID,
    HEADER_EVENT_ID,
    HEADER_TYPE,
    HEADER_VERSION,
    TOPICS_BY_NAME,
    dlq_topic,
)
from contracts.events import EVENT_MODELS

DOCS = Path(__file__).parents[1] / "docs"

_HEADERS = {
    "type": "object",
    "properties": {
        HEADER_TYPE: {"type": "string", "description": "event type"},
        HEADER_VERSION: {"type": "string", "description": "schema version"},
        HEADER_CORRELATION_ID: {"type": "string", "description": "follows a request from the webhook on"},
        HEADER_EVENT_ID: {"type": "string", "format": "uuid"},
    },
}


def _schemas() -> tuple[dict[str, Any], dict[str, Any]]:
    refs, top = models_json_schema(
        [(m, "serialization") for m in EVENT_MODELS], ref_template="#/components/schemas/{model}"
    )
    by_type = {m.TYPE: refs[(m, "serialization")] for m in EVENT_MODELS}
    return by_type, top.get("$defs", {})


def asyncapi_for(spec: Any) -> dict[str, Any]:
    by_type, schemas = _schemas()
    receives = sorted({t for c in spec.consumers for t in c.topics})
    sends = sorted(t.name for t in CATALOG if t.producer == spec.name)
    dlqs = sorted(dlq_topic(t) for t in receives)
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for topic in sorted({*receives, *sends, *dlqs}):
        base = TOPICS_BY_NAME[topic.removesuffix(".dlq")]
        mname = base.model.__name__
        messages[mname] = {
            "name": base.model.TYPE,
            "contentType": "application/json",
            "headers": _HEADERS,
            "payload": by_type[base.model.TYPE],
        }
        channels[topic] = {
            "address": topic,
            "description": ("dead letters of " if topic.endswith(".dlq") else "") + base.description,
            "messages": {mname: {"$ref": f"#/components/messages/{mname}"}},
            "bindings": {
                "kafka": {"partitions": 1 if topic.endswith(".dlq") else base.partitions, "bindingVersion": "0.5.0"}
            },
        }
        action = "receive" if topic in receives else "send"
        operations[f"{action}_{topic}"] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{topic}"},
            "summary": f"{'consumed' if action == 'receive' else 'published'} by {spec.name}; key = return id",
        }
    return {
        "asyncapi": "3.0.0",
        "info": {"title": f"returnflow {spec.name}", "version": "1.0.0", "description": spec.description},
        "defaultContentType": "application/json",
        "servers": {"kafka": {"host": "kafka:9092", "protocol": "kafka"}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def openapi_for(spec: Any) -> dict[str, Any]:
    from returnflow.service import create_app
    from returnflow.settings import Settings

    # Building the app connects to nothing; the endpoints only need to be set.
    settings = Settings(database_url=SecretStr("postgresql://docs/docs"), kafka_bootstrap="docs:9092")
    doc: dict[str, Any] = create_app(spec, settings).openapi()
    return doc


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def all_specs() -> dict[str, Any]:
    from services import SERVICE_MODULES

    return {name: import_module(module).SPEC for name, module in SERVICE_MODULES.items()}


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
