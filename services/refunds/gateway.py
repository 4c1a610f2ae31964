"""Payment gateway adapter: one refund, one idempotency key for every attempt of it.

The `simulated` gateway (services/refunds/gateway_sim.py) speaks the same small HTTP API a card PSP
does: `POST /v1/refunds` with an `Idempotency-Key` header; the same key answers with the first
result, the same key with different parameters is refused (422), a key still being processed
answers 409. Timeouts, transport errors, 409, 429 and 5xx are retried with exponential backoff and
jitter under the same key; any other 4xx is a definitive refusal. When every attempt of a series
failed without an answer the outcome is unknown — the refund stays pending and a later series asks
again with the same key (never a new one), so the customer is paid at most once.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from returnflow.logging import get_logger

log = get_logger("refunds.gateway")

RETRYABLE_STATUS = frozenset({409, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class GatewayResult:
    ok: bool
    reference: str | None = None
    error: str | None = None
    retryable: bool = False


class Gateway(Protocol):
    async def refund(
        self, idempotency_key: str, payment_id: str, amount: int, currency: str, metadata: dict[str, str]
    ) -> GatewayResult: ...

    async def close(self) -> None: ...


class HttpGateway:
    """A PSP reached over HTTP (the simulated one, or any with the same refund API)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        timeout_s: float = 5.0,
        attempts: int = 3,
        backoff_s: float = 0.2,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.client = client or httpx.AsyncClient(
            base_url=self.base_url, limits=httpx.Limits(max_connections=200, max_keepalive_connections=100)
        )

    async def refund(
        self, idempotency_key: str, payment_id: str, amount: int, currency: str, metadata: dict[str, str]
    ) -> GatewayResult:
        body: dict[str, Any] = {"payment_id": payment_id, "amount": amount, "currency": currency, "metadata": metadata}
        headers = {"Idempotency-Key": idempotency_key, "Authorization": f"Bearer {self.api_key}"}
        last = "no attempt made"
        for attempt in range(1, self.attempts + 1):
            try:
                r = await self.client.post("/v1/refunds", json=body, headers=headers, timeout=self.timeout_s)
            except httpx.TimeoutException:
                last = f"gateway timed out after {self.timeout_s}s"
            except httpx.TransportError as exc:
                last = f"gateway unreachable ({type(exc).__name__})"
            else:
                if r.status_code in (200, 201):
                    data = r.json()
                    if data.get("status") == "succeeded":
                        return GatewayResult(True, reference=str(data["id"]))
                    if data.get("status") == "failed":
                        return GatewayResult(False, error=f"refund failed at the gateway: {data.get('failure_reason')}")
                    last = f"refund {data.get('id')} is {data.get('status')} at the gateway"
                elif r.status_code in RETRYABLE_STATUS:
                    last = f"gateway answered {r.status_code}"
                else:
                    return GatewayResult(False, error=f"gateway refused ({r.status_code}): {_message(r)}")
            if attempt < self.attempts:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1) * (0.5 + random.random() / 2))
        log.warning("refund attempt series without an answer", idempotency_key=idempotency_key, error=last)
        return GatewayResult(False, error=last, retryable=True)

    async def close(self) -> None:
        await self.client.aclose()


def _message(r: httpx.Response) -> str:
    try:
        err = r.json().get("error", {})
        return str(err.get("message") or err)[:300]
    except ValueError:
        return r.text[:300]
