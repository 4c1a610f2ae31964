"""Refund providers behind one interface (`Gateway`): one refund, one idempotency key for every attempt.

Every provider's answer is mapped onto the ledger's four outcomes (`GatewayResult.outcome`):
`paid` (issued), `declined` (refused for good: the amount is released and a person decides what next),
`retryable` (nothing was made; asked again later) and `unknown` (the provider may have made it — a
timeout, a 5xx, a refund still pending: asked again with the same key, or queried by the provider's
reference, never released). A provider with asynchronous outcomes also verifies its webhooks
(`RefundWebhooks`) and reports settled refunds as `WebhookOutcome`s. Adapters: the simulator below
(`HttpGateway`, the embedded default) and Stripe (services/refunds/providers/stripe.py).

The `simulated` gateway (services/refunds/dev/gateway_sim.py) speaks the same small HTTP API a card PSP
does: `POST /v1/refunds` with an `Idempotency-Key` header; the same key answers with the first
result, the same key with different parameters is refused (422), a key still being processed
answers 409. Timeouts, transport errors, 409, 429 and 5xx are retried with exponential backoff and
jitter under the same key; any other 4xx is a definitive refusal. When every attempt of a series
failed without an answer the outcome is unknown — the refund stays pending and a later series asks
again with the same key (never a new one), so the customer is paid at most once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable
from urllib.parse import urlsplit

import h11
import orjson

from returnflow.logging import get_logger
from returnflow.loops import Backoff
from returnflow.tracing import TRACEPARENT, outgoing, response_status
from services.refunds.rules import WebhookOutcome

log = get_logger("refunds.gateway")

RETRYABLE_STATUS = frozenset({409, 429, 500, 502, 503, 504})


RefundOutcome = Literal["paid", "declined", "retryable", "unknown"]


@dataclass(frozen=True)
class GatewayResult:
    """One attempt series' answer. `reference`: the provider's id of the refund when it is known (also
    for a refund still pending there, so the next series queries it instead of creating one)."""

    ok: bool
    reference: str | None = None
    error: str | None = None
    retryable: bool = False
    unknown: bool = False  # the provider may have made it: never released, asked again

    @property
    def outcome(self) -> RefundOutcome:
        if self.ok:
            return "paid"
        if not self.retryable:
            return "declined"
        return "unknown" if self.unknown else "retryable"


def paid(reference: str) -> GatewayResult:
    return GatewayResult(True, reference=reference)


def declined(error: str, reference: str | None = None) -> GatewayResult:
    return GatewayResult(False, reference=reference, error=error)


def retryable(error: str) -> GatewayResult:
    return GatewayResult(False, error=error, retryable=True)


def unknown(error: str, reference: str | None = None) -> GatewayResult:
    return GatewayResult(False, reference=reference, error=error, retryable=True, unknown=True)


class Gateway(Protocol):
    """A refund provider. `refund` asks for one refund under `idempotency_key` (the same key for every
    attempt of it, in every series); `reference` is the provider's id of this refund from an earlier
    series whose outcome stayed unknown (then the adapter queries it rather than asking again)."""

    async def refund(
        self,
        idempotency_key: str,
        payment_id: str,
        amount: int,
        currency: str,
        metadata: dict[str, str],
        reference: str | None = None,
    ) -> GatewayResult: ...

    async def close(self) -> None: ...


class WebhookRefused(Exception):
    """A webhook that is not the provider's (status and a message naming what is wrong)."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


__all__ = ["WebhookOutcome"]  # defined with the pure rules that match it to the ledger


@runtime_checkable
class RefundWebhooks(Protocol):
    """The optional part of a provider with asynchronous outcomes: verify and read its webhook."""

    def read_webhook(self, headers: Mapping[str, str], body: bytes) -> list[WebhookOutcome]: ...


_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter, h11.Connection]


class _Stale(Exception):
    """A reused keep-alive connection turned out closed before any answer."""


class Http11Pool:
    """A small keep-alive HTTP/1.1 client (h11 over asyncio streams) for one gateway origin.

    httpx spends most of a refund's CPU in its connection-pool bookkeeping once dozens of requests
    are in flight; paying 1,000 refunds a second needs a leaner path. A connection that saw an error
    or a timeout is closed, never reused.
    """

    def __init__(self, base_url: str, max_connections: int = 32) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"gateway URL must be http(s)://host[:port]: {base_url!r}")
        self.tls = url.scheme == "https"
        self.host = url.hostname
        self.port = url.port or (443 if self.tls else 80)
        self.prefix = url.path.rstrip("/")
        self.authority = url.netloc
        self._idle: list[_Conn] = []
        self._slots = asyncio.Semaphore(max_connections)

    async def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes, timeout_s: float
    ) -> tuple[int, bytes]:
        status, _, data = await self.send(method, path, headers, body, timeout_s)
        return status, data

    async def send(
        self, method: str, path: str, headers: dict[str, str], body: bytes, timeout_s: float
    ) -> tuple[int, dict[str, str], bytes]:
        """One request: status, response headers (lower-case names) and body. It carries the current trace."""
        with outgoing(method, self._url(path)) as (tp, span):
            if tp is not None:
                headers = {**headers, TRACEPARENT: tp}
            async with self._slots:
                idle = self._take_idle()
                if idle is not None:
                    try:
                        answer = await self._request(idle, method, path, headers, body, timeout_s)
                        response_status(span, answer[0])
                        return answer
                    except _Stale:
                        pass  # the server closed this kept-alive connection meanwhile: once more on a new one
                answer = await self._request(None, method, path, headers, body, timeout_s)
                response_status(span, answer[0])
                return answer

    def _url(self, path: str) -> str:
        return f"{'https' if self.tls else 'http'}://{self.authority}{self.prefix}{path.split('?', 1)[0]}"

    def _take_idle(self) -> _Conn | None:
        while self._idle:
            conn = self._idle.pop()
            if not conn[0].at_eof() and not conn[1].is_closing():
                return conn
            conn[1].close()
        return None

    async def _request(
        self, conn: _Conn | None, method: str, path: str, headers: dict[str, str], body: bytes, timeout_s: float
    ) -> tuple[int, dict[str, str], bytes]:
        reused = conn is not None
        try:
            async with asyncio.timeout(timeout_s):
                if conn is None:
                    reader, writer = await asyncio.open_connection(self.host, self.port, ssl=self.tls or None)
                    conn = (reader, writer, h11.Connection(h11.CLIENT))
                status, got, data = await self._exchange(conn, method, path, headers, body)
        except (ConnectionResetError, BrokenPipeError, h11.RemoteProtocolError) as exc:
            if conn is not None:
                conn[1].close()
            if reused:
                raise _Stale from exc
            raise
        except BaseException:
            if conn is not None:
                conn[1].close()
            raise
        if conn[2].our_state is h11.IDLE and conn[2].their_state is h11.IDLE:
            self._idle.append(conn)
        else:
            conn[1].close()
        return status, got, data

    async def _exchange(
        self,
        conn: _Conn,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
    ) -> tuple[int, dict[str, str], bytes]:
        reader, writer, h = conn
        hdrs = [("host", self.authority), ("content-length", str(len(body))), *headers.items()]
        writer.write(h.send(h11.Request(method=method, target=self.prefix + path, headers=hdrs)) or b"")
        writer.write(h.send(h11.Data(data=body)) or b"")
        writer.write(h.send(h11.EndOfMessage()) or b"")
        await writer.drain()
        status = 0
        got: dict[str, str] = {}
        chunks: list[bytes] = []
        while True:
            event = h.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                h.receive_data(data)
                if not data and h.their_state is not h11.DONE:
                    raise ConnectionResetError("gateway closed the connection")
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                got = {k.decode().lower(): v.decode(errors="replace") for k, v in event.headers}
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
        if h.our_state is h11.DONE and h.their_state is h11.DONE:
            h.start_next_cycle()
        return status, got, b"".join(chunks)

    async def close(self) -> None:
        for _, writer, _ in self._idle:
            writer.close()
        self._idle.clear()


class HttpGateway:
    """A PSP reached over HTTP (the simulated one, or any with the same refund API)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        timeout_s: float = 5.0,
        attempts: int = 3,
        backoff_s: float = 0.2,
        max_connections: int = 32,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.pool = Http11Pool(self.base_url, max_connections)

    async def refund(
        self,
        idempotency_key: str,
        payment_id: str,
        amount: int,
        currency: str,
        metadata: dict[str, str],
        reference: str | None = None,
    ) -> GatewayResult:
        # The simulator replays a key's first answer for as long as it runs: asking again is the query.
        body = orjson.dumps({"payment_id": payment_id, "amount": amount, "currency": currency, "metadata": metadata})
        headers = {"idempotency-key": idempotency_key, "content-type": "application/json"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        # The n-th wait is drawn from [b·2^(n-1)/2, b·2^(n-1)]: not capped within one series.
        backoff = Backoff(self.backoff_s, self.backoff_s * 2**self.attempts)
        last = "no attempt made"
        for attempt in range(1, self.attempts + 1):
            answer = await self._attempt(headers, body)
            if isinstance(answer, GatewayResult):
                return answer
            last = answer
            if attempt < self.attempts:
                await backoff.sleep()
        log.warning("refund attempt series without an answer", idempotency_key=idempotency_key, error=last)
        return unknown(last)

    async def _attempt(self, headers: dict[str, str], body: bytes) -> GatewayResult | str:
        """One request: the gateway's definitive answer, or why there is none yet (worth retrying)."""
        try:
            status, raw = await self.pool.request("POST", "/v1/refunds", headers, body, self.timeout_s)
        except TimeoutError:
            return f"gateway timed out after {self.timeout_s}s"
        except (OSError, h11.ProtocolError) as exc:
            return f"gateway unreachable ({type(exc).__name__})"
        if status in (200, 201):
            data = json_object(raw)
            if data.get("status") == "succeeded":
                return paid(str(data["id"]))
            if data.get("status") == "failed":
                return declined(f"refund failed at the gateway: {data.get('failure_reason')}")
            return f"refund {data.get('id')} is {data.get('status')} at the gateway"
        if status in RETRYABLE_STATUS:
            return f"gateway answered {status}"
        return declined(f"gateway refused ({status}): {_message(raw)}")

    async def close(self) -> None:
        await self.pool.close()


def json_object(raw: bytes) -> dict[str, Any]:
    """A provider's JSON answer as an object; {} for anything else (an HTML error page, a list)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _message(raw: bytes) -> str:
    err = json_object(raw).get("error", {})
    if isinstance(err, dict) and err.get("message"):
        return str(err["message"])[:300]
    return raw[:300].decode(errors="replace")
