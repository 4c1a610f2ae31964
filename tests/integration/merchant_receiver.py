"""A merchant's webhook endpoint, served over a real socket: it verifies each delivery with the Standard Webhooks
reference library (`standardwebhooks`), as a merchant's code would, and answers as scripted (e.g. 500 on a
delivery's first attempt, 200 after). And an endpoint that is down: it accepts connections and never answers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.integration.fake_sms_providers import serve_app


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    error: str | None
    answered: int

    @property
    def payload(self) -> dict[str, Any]:
        return dict(orjson.loads(self.body))


@dataclass
class MerchantReceiver:
    """`fail_first`: answer this status to the first attempt of each webhook-id, 200 to the next ones;
    `always`: answer this status to every attempt."""

    secret: str
    fail_first: int | None = 500
    always: int | None = None
    received: list[Received] = field(default_factory=list)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self.endpoint, methods=["POST"])])

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            Webhook(self.secret).verify(body, headers)
            verified, error = True, None
        except WebhookVerificationError as exc:
            verified, error = False, str(exc)
        msg_id = headers.get("webhook-id")
        seen = any(r.headers.get("webhook-id") == msg_id for r in self.received)
        status = 401 if not verified else (self.fail_first if self.fail_first and not seen else 200)
        if verified and self.always is not None:
            status = self.always
        self.received.append(Received(request.url.path, headers, body, verified, error, status))
        text = "signature rejected" if not verified else ("merchant hiccup" if status >= 500 else "ok")
        return Response(text, status_code=status)

    def attempts_of(self, msg_id: str) -> list[Received]:
        return [r for r in self.received if r.headers.get("webhook-id") == msg_id]


@contextlib.asynccontextmanager
async def serve_receiver(receiver: MerchantReceiver) -> AsyncIterator[str]:
    async with serve_app(receiver.app()) as url:
        yield url


@contextlib.asynccontextmanager
async def endpoint_that_never_answers() -> AsyncIterator[tuple[str, list[int]]]:
    """A host that is down in the worst way: it takes the connection and never says a word. Yields its URL and
    the count of connections it took (one per attempt)."""
    stop = asyncio.Event()
    connections: list[int] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        with contextlib.suppress(Exception):
            await stop.wait()
            writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", connections
    finally:
        stop.set()
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)
