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
