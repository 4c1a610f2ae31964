"""Small HTTP helpers shared by the services' FastAPI routes."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body, default=str), status_code=status, media_type="application/json")


def error(status: int, message: str, **extra: Any) -> Response:
    return json_response({"error": message, **extra}, status)


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body (signatures are over raw bytes), refusing more than `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def is_json(request: Request) -> bool:
    ctype = request.headers.get("content-type", "")
    return ctype.split(";")[0].strip().lower() in ("application/json", "application/cloudevents+json") or (
        ctype.split(";")[0].strip().lower().endswith("+json")
    )


def correlation_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("correlation_id") or "")


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema with its local `$defs` references inlined (our models have no cycles)."""
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node and node["$ref"].startswith("#/$defs/"):
                return walk(defs[node["$ref"].removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    out: dict[str, Any] = walk(schema)
    return out


def json_body(model: Any, example: Any = None) -> dict[str, Any]:
    """`openapi_extra` for a route that reads its raw body (for signatures) but takes this JSON model."""
    media: dict[str, Any] = {"schema": inline_refs(model.model_json_schema())}
    if example is not None:
        media["example"] = example
    return {"requestBody": {"required": True, "content": {"application/json": media}}}
