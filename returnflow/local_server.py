"""Local stand-ins of external APIs (the payment simulator, the local Stripe, Alipay and Shopify, the
local Kuaidi100): what they share.

`serve_in_loop` serves an ASGI app on a loopback port inside the running event loop (how tests run
them). `stand_in_app` is the app every stand-in starts from: `/healthz`, `/readyz`, and the fault
routes through which a test makes the next requests fail the way the real API fails (a `FaultQueue`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, Generic, TypeVar

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError


@contextlib.asynccontextmanager
async def serve_in_loop(app: Any, host: str = "127.0.0.1", port: int = 0, keep_alive_s: int = 5) -> AsyncIterator[str]:
    """Yields the base URL once the server accepts connections; stops it and closes the socket on exit."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    # a request a test made hang (a fault's delay) is cut at exit rather than waited for
    config = uvicorn.Config(
        app, log_level="warning", lifespan="off", timeout_keep_alive=keep_alive_s, timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()  # it failed to start: raise why
        await asyncio.sleep(0.01)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


F = TypeVar("F", bound=BaseModel)


class FaultQueue(Generic[F]):
    """The faults a test asked for, in order; each applies to its next `count` requests. A fault with a
    `target` ("query", "mutation", … or "any") applies only to requests of that kind."""

    def __init__(self) -> None:
        self.items: deque[F] = deque()

    def add(self, fault: F) -> None:
        self.items.append(fault)

    def clear(self) -> None:
        self.items.clear()

    def next(self, target: str | None = None) -> F | None:
        """The fault the next request (of kind `target`) meets, or None."""
        for fault in list(self.items):
            if target is None or getattr(fault, "target", "any") in ("any", target):
                fault.count -= 1  # type: ignore[attr-defined]
                if fault.count <= 0:  # type: ignore[attr-defined]
                    self.items.remove(fault)
                return fault.model_copy()
        return None

    def __len__(self) -> int:
        return len(self.items)


def stand_in_app(
    *,
    title: str,
    service: str,
    description: str | None,
    faults: FaultQueue[Any],
    fault_model: type[BaseModel],
    faults_path: str = "/_dev/faults",
) -> FastAPI:
    """A stand-in's FastAPI app with its health routes and `POST`/`DELETE {faults_path}` (a fault as
    `fault_model` validates it; 422 naming the field otherwise)."""
    app = FastAPI(title=title, description=description or "")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive", "service": service}

    @app.get("/readyz")
    async def readyz() -> dict[str, Any]:
        return {"ready": True, "service": service}

    @app.post(faults_path, status_code=204)
    async def add_fault(request: Request) -> Response:
        try:
            faults.add(fault_model.model_validate_json(await request.body()))
        except ValidationError as exc:
            return json_response({"detail": exc.errors(include_url=False, include_context=False)}, 422)
        return Response(status_code=204)

    @app.delete(faults_path, status_code=204)
    async def clear_faults() -> Response:
        faults.clear()
        return Response(status_code=204)

    return app
