"""AsyncAPI document of one service, from the topic catalog and the service's consumers: what it
receives, sends and dead-letters. Served at /asyncapi.json; `make docs` writes every service's."""

from __future__ import annotations

import json
from typing import Any

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


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
