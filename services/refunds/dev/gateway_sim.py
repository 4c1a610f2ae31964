"""The `simulated` payment gateway: a small local HTTP service with a PSP's refund semantics.

    POST /v1/refunds            Idempotency-Key required; body {payment_id, amount, currency, metadata}
                                201 new refund; 200 + Idempotent-Replayed: true for the same key and body;
                                422 same key, different parameters; 409 same key still in progress
    GET  /v1/refunds/{id}       one refund
    GET  /v1/refunds            list (?payment_id=)
    POST /_sim/faults           inject faults into the next requests:
                                {"mode": "timeout" | "hang" | "error" | "decline", "count": n,
                                 "status": 503, "delay_s": 2.0}
                                timeout = the refund IS made, the answer comes too late (the hard case);
                                hang = nothing is made and the answer comes too late;
                                error = answered with `status` (5xx) and nothing made; decline = 402
    DELETE /_sim/faults         clear faults;  GET /_sim/stats  request and refund counts

State is in memory (one process serves every refunds worker). `returnflow up` runs it as its own
process on loopback; tests start it on a free port with `serve_gateway`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from returnflow.local_server import FaultQueue, json_response, serve_in_loop, stand_in_app


class RefundRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    payment_id: str = Field(min_length=1, max_length=128)
    amount: StrictInt = Field(gt=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    metadata: dict[str, str] = Field(default_factory=dict)


class Fault(BaseModel):
    mode: Literal["timeout", "hang", "error", "decline"]
    count: int = Field(default=1, ge=1)
    status: int = Field(default=503, ge=400, le=599)
    delay_s: float = Field(default=2.0, ge=0, le=120)


@dataclass
class SimState:
    api_key: str | None = None
    by_key: dict[str, tuple[str, int, dict[str, Any]]] = field(
        default_factory=dict
    )  # key -> (fingerprint, status, body)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    in_flight: set[str] = field(default_factory=set)
    faults: FaultQueue[Fault] = field(default_factory=FaultQueue)
    requests: int = 0


def _err(status: int, type_: str, message: str, param: str | None = None) -> Response:
    e: dict[str, Any] = {"type": type_, "message": message}
    if param:
        e["param"] = param
    return json_response({"error": e}, status)


async def _parse(state: SimState, request: Request) -> tuple[str, RefundRequest, str] | Response:
    """The request's idempotency key, body and fingerprint — or the error the PSP answers."""
    if state.api_key and request.headers.get("authorization") != f"Bearer {state.api_key}":
        return _err(401, "authentication_error", "invalid API key")
    key = request.headers.get("idempotency-key", "").strip()
    if not key or len(key) > 255:
        return _err(400, "invalid_request_error", "an Idempotency-Key header is required", "Idempotency-Key")
    try:
        req = RefundRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        return _err(400, "invalid_request_error", first["msg"], ".".join(str(p) for p in first["loc"]))
    fingerprint = hashlib.sha256(orjson.dumps(req.model_dump(), option=orjson.OPT_SORT_KEYS)).hexdigest()
    return key, req, fingerprint


def _replay(state: SimState, key: str, fingerprint: str) -> Response:
    fp, status, body = state.by_key[key]
    if fp != fingerprint:
        message = "keys for idempotent requests can only be used with the same parameters they were first used with"
        return _err(422, "idempotency_error", message)
    return json_response(body, 200 if status == 201 else status, {"Idempotent-Replayed": "true"})


def _make_refund(state: SimState, req: RefundRequest, fault: Fault | None) -> tuple[int, dict[str, Any]]:
    if fault is not None and fault.mode == "decline":
        return 402, {"error": {"type": "card_error", "code": "refund_declined", "message": "declined"}}
    rid = f"re_{uuid.uuid4().hex[:24]}"
    state.refunds[rid] = {
        "id": rid,
        "object": "refund",
        "payment_id": req.payment_id,
        "amount": req.amount,
        "currency": req.currency,
        "status": "succeeded",
        "metadata": req.metadata,
        "created": int(time.time()),
    }
    return 201, state.refunds[rid]


async def create_refund(state: SimState, request: Request) -> Response:
    """POST /v1/refunds: one refund per idempotency key; the same key replays the first answer, the same
    key with other parameters is refused; injected faults hang, fail, time out or decline."""
    state.requests += 1
    parsed = await _parse(state, request)
    if isinstance(parsed, Response):
        return parsed
    key, req, fingerprint = parsed
    fault = state.faults.next()
    if fault is not None and fault.mode == "hang":
        await asyncio.sleep(fault.delay_s)
        return _err(504, "api_error", "simulated hang")
    if fault is not None and fault.mode == "error":
        return _err(fault.status, "api_error", "simulated gateway error")
    if key in state.in_flight:
        return _err(409, "idempotency_error", "a request with this key is still being processed")
    if key in state.by_key:
        answer = _replay(state, key, fingerprint)
    else:
        status, body = _make_refund(state, req, fault)
        state.by_key[key] = (fingerprint, status, body)
        answer = json_response(body, status)
    if fault is not None and fault.mode == "timeout":
        await asyncio.sleep(fault.delay_s)  # made, but the answer arrives after the caller gave up
    return answer


def create_sim_app(api_key: str | None = None) -> FastAPI:
    state = SimState(api_key=api_key)
    app = stand_in_app(
        title="returnflow simulated payment gateway",
        service="gateway-sim",
        description=__doc__,
        faults=state.faults,
        fault_model=Fault,
        faults_path="/_sim/faults",
    )
    app.state.sim = state

    @app.post("/v1/refunds", status_code=201)
    async def post_refund(request: Request) -> Response:
        return await create_refund(state, request)

    @app.get("/v1/refunds/{refund_id}")
    async def get_refund(refund_id: str) -> Response:
        found = state.refunds.get(refund_id)
        return json_response(found) if found else _err(404, "invalid_request_error", f"no refund {refund_id}")

    @app.get("/v1/refunds")
    async def list_refunds(payment_id: str | None = None) -> Response:
        data = [r for r in state.refunds.values() if payment_id is None or r["payment_id"] == payment_id]
        return json_response({"object": "list", "data": data})

    @app.get("/_sim/stats")
    async def stats() -> Response:
        return json_response({"requests": state.requests, "refunds": len(state.refunds), "keys": len(state.by_key)})

    return app


@contextlib.asynccontextmanager
async def serve_gateway(
    host: str = "127.0.0.1", port: int = 0, api_key: str | None = None, keep_alive_s: float = 5.0
) -> AsyncIterator[str]:
    """Run the simulated gateway in this event loop (tests); yields its base URL."""
    async with serve_in_loop(create_sim_app(api_key), host, port, int(max(1, keep_alive_s))) as url:
        yield url


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from services.refunds.settings import RefundsSettings

    parser = argparse.ArgumentParser(description="returnflow simulated payment gateway")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    api_key = RefundsSettings.load().gateway_api_key
    key = api_key.get_secret_value() if api_key else None
    uvicorn.run(
        create_sim_app(key),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
