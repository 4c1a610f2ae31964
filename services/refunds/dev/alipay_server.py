"""A local Alipay OpenAPI gateway for development and tests: `alipay.trade.refund` and
`alipay.trade.fastpay.refund.query` as Alipay documents them, over real sockets.

    POST /gateway.do   form (or query string) parameters: app_id, method, format, charset, sign_type=RSA2,
                       timestamp, version, biz_content (JSON), sign — verified with the merchant's app public
                       key (40002 isv.invalid-signature otherwise); answers are signed with this server's
                       Alipay private key over the exact text of the response node.
      alipay.trade.refund               {out_trade_no | trade_no, refund_amount "40.00", out_request_no}:
                                        10000 fund_change Y; the same out_request_no again: 10000
                                        fund_change N (nothing moves); with another amount: 40004
                                        ACQ.DISCORDANT_REPEAT_REQUEST; above what is left: 40004
                                        ACQ.REFUND_AMT_NOT_EQUAL_TOTAL; unknown trade: ACQ.TRADE_NOT_EXIST
      alipay.trade.fastpay.refund.query {out_trade_no | trade_no, out_request_no}: 10000 with
                                        refund_status REFUND_SUCCESS when made, else without it
    POST /_dev/trades  {"out_trade_no": "…", "total_fen": 5000}: a paid trade that can be refunded
    POST /_dev/faults  {"mode": "timeout" | "system_error" | "http_error" | "rate_limit", "count": n,
                       "delay_s": 2.0, "status": 502, "retry_after": 1}: timeout = the refund IS made, the
                       answer comes too late; system_error = 20000 isp.unknow-error, nothing made;
                       http_error = HTTP `status`, nothing made; rate_limit = HTTP 429 with Retry-After
    GET  /_dev/stats   requests, refunds made

A trade not registered is created on first use with `auto_trade_fen` when that is set. State is in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl

import orjson
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from returnflow.local_server import FaultQueue, serve_in_loop, stand_in_app
from services.refunds.providers.alipay import QUERY, REFUND, fen, rsa2_sign, rsa2_verify, signing_string


class Fault(BaseModel):
    mode: Literal["timeout", "system_error", "http_error", "rate_limit"]
    count: int = Field(default=1, ge=1)
    status: int = Field(default=502, ge=500, le=599)
    delay_s: float = Field(default=2.0, ge=0, le=120)
    retry_after: int = Field(default=1, ge=0, le=3600)


class Trade(BaseModel):
    out_trade_no: str = Field(min_length=1, max_length=64)
    total_fen: int = Field(gt=0)


@dataclass
class AlipayState:
    app_id: str
    app_public_key: rsa.RSAPublicKey  # the merchant's: verifies requests
    alipay_key: rsa.RSAPrivateKey  # this server's: signs answers
    auto_trade_fen: int | None = None
    trades: dict[str, dict[str, Any]] = field(default_factory=dict)  # out_trade_no -> trade_no, total, refunded
    refunds: dict[tuple[str, str], int] = field(default_factory=dict)  # (out_trade_no, out_request_no) -> fen
    faults: FaultQueue[Fault] = field(default_factory=FaultQueue)
    requests: int = 0

    def trade(self, biz: dict[str, Any]) -> dict[str, Any] | None:
        if biz.get("trade_no"):
            return next((t for t in self.trades.values() if t["trade_no"] == biz["trade_no"]), None)
        out = str(biz.get("out_trade_no") or "")
        if out and out not in self.trades and self.auto_trade_fen:
            self.add(out, self.auto_trade_fen)
        return self.trades.get(out)

    def add(self, out_trade_no: str, total: int) -> None:
        trade_no = "2026" + "".join(secrets.choice("0123456789") for _ in range(24))
        self.trades[out_trade_no] = {"out_trade_no": out_trade_no, "trade_no": trade_no, "total": total, "refunded": 0}


def _yuan(amount: int) -> str:
    return f"{amount // 100}.{amount % 100:02d}"


def answer(state: AlipayState, method: str, node: dict[str, Any]) -> Response:
    """`{"<method>_response": node, "sign": …}` signed over the node's exact text."""
    name = "error_response" if node.get("sub_code", "").startswith("isv.") else method.replace(".", "_") + "_response"
    content = orjson.dumps(node)
    sign = rsa2_sign(state.alipay_key, content)
    raw = b'{"' + name.encode() + b'":' + content + b',"sign":"' + sign.encode() + b'"}'
    return Response(raw, media_type="application/json;charset=utf-8")


def _failed(code: str, msg: str, sub_code: str, sub_msg: str, **extra: Any) -> dict[str, Any]:
    return {"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg, **extra}


def refund(state: AlipayState, biz: dict[str, Any]) -> dict[str, Any]:
    t = state.trade(biz)
    if t is None:
        return _failed("40004", "Business Failed", "ACQ.TRADE_NOT_EXIST", "交易不存在")
    try:
        amount = fen(str(biz.get("refund_amount", "")))
    except ValueError:
        return _failed("40002", "Invalid Arguments", "isv.invalid-parameter", "refund_amount 格式错误")
    if amount <= 0:
        return _failed("40002", "Invalid Arguments", "isv.invalid-parameter", "refund_amount 必须大于 0")
    request_no = str(biz.get("out_request_no") or t["out_trade_no"])
    ids = {"trade_no": t["trade_no"], "out_trade_no": t["out_trade_no"], "buyer_logon_id": "159****5620"}
    done = state.refunds.get((t["out_trade_no"], request_no))
    if done is not None:
        if done != amount:
            return _failed("40004", "Business Failed", "ACQ.DISCORDANT_REPEAT_REQUEST", "请求信息不一致", **ids)
        return {"code": "10000", "msg": "Success", **ids, "fund_change": "N", "refund_fee": _yuan(t["refunded"])}
    if amount > t["total"] - t["refunded"]:
        return _failed("40004", "Business Failed", "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限", **ids)
    t["refunded"] += amount
    state.refunds[(t["out_trade_no"], request_no)] = amount
    return {"code": "10000", "msg": "Success", **ids, "fund_change": "Y", "refund_fee": _yuan(t["refunded"])}


def refund_query(state: AlipayState, biz: dict[str, Any]) -> dict[str, Any]:
    t = state.trade(biz)
    if t is None:
        return _failed("40004", "Business Failed", "ACQ.TRADE_NOT_EXIST", "交易不存在")
    request_no = str(biz.get("out_request_no") or t["out_trade_no"])
    node: dict[str, Any] = {
        "code": "10000",
        "msg": "Success",
        "trade_no": t["trade_no"],
        "out_trade_no": t["out_trade_no"],
    }
    made = state.refunds.get((t["out_trade_no"], request_no))
    if made is not None:
        node |= {
            "out_request_no": request_no,
            "total_amount": _yuan(t["total"]),
            "refund_amount": _yuan(made),
            "refund_status": "REFUND_SUCCESS",
        }
    return node


async def gateway(state: AlipayState, request: Request) -> Response:
    state.requests += 1
    raw = await request.body()
    params = dict(parse_qsl(request.url.query)) | dict(parse_qsl(raw.decode(errors="replace")))
    method = params.get("method", "")
    if method not in (REFUND, QUERY):
        return answer(
            state, method or "alipay", _failed("40002", "Invalid Arguments", "isv.invalid-method", "不存在的方法名")
        )
    if params.get("app_id") != state.app_id:
        return answer(state, method, _failed("40002", "Invalid Arguments", "isv.invalid-app-id", "无效的AppID参数"))
    if params.get("sign_type") != "RSA2" or not rsa2_verify(
        state.app_public_key, signing_string(params), params.get("sign", "")
    ):
        return answer(state, method, _failed("40002", "Invalid Arguments", "isv.invalid-signature", "验签出错"))
    try:
        biz = orjson.loads(params.get("biz_content", ""))
        assert isinstance(biz, dict)
    except (orjson.JSONDecodeError, AssertionError):
        return answer(state, method, _failed("40002", "Invalid Arguments", "isv.invalid-parameter", "biz_content"))
    fault = state.faults.next() if method == REFUND else None
    if fault is not None and fault.mode == "http_error":
        return Response(b"<html>Bad Gateway</html>", status_code=fault.status, media_type="text/html")
    if fault is not None and fault.mode == "rate_limit":
        return Response(b"", status_code=429, headers={"retry-after": str(fault.retry_after)})
    if fault is not None and fault.mode == "system_error":
        return answer(state, method, _failed("20000", "Service Currently Unavailable", "isp.unknow-error", "系统繁忙"))
    node = refund(state, biz) if method == REFUND else refund_query(state, biz)
    if fault is not None and fault.mode == "timeout":
        await asyncio.sleep(fault.delay_s)  # made, but the answer arrives after the caller gave up
    return answer(state, method, node)


def create_alipay_app(state: AlipayState) -> FastAPI:
    app = stand_in_app(
        title="returnflow local Alipay (OpenAPI gateway)",
        service="alipay-local",
        description=__doc__,
        faults=state.faults,
        fault_model=Fault,
    )
    app.state.alipay = state

    @app.post("/gateway.do")
    async def post_gateway(request: Request) -> Response:
        return await gateway(state, request)

    @app.post("/_dev/trades", status_code=204)
    async def add_trade(trade: Trade) -> Response:
        state.add(trade.out_trade_no, trade.total_fen)
        return Response(status_code=204)

    @app.get("/_dev/stats")
    async def stats() -> Response:
        body = {"requests": state.requests, "refunds": len(state.refunds), "fen": sum(state.refunds.values())}
        return Response(orjson.dumps(body), media_type="application/json")

    return app


@dataclass
class LocalAlipay:
    url: str  # the gateway URL (…/gateway.do)
    state: AlipayState


@contextlib.asynccontextmanager
async def serve_alipay(
    app_id: str,
    app_public_key: rsa.RSAPublicKey,
    alipay_key: rsa.RSAPrivateKey,
    auto_trade_fen: int | None = None,
    host: str = "127.0.0.1",
) -> AsyncIterator[LocalAlipay]:
    """Run the local Alipay in this event loop (tests)."""
    state = AlipayState(app_id, app_public_key, alipay_key, auto_trade_fen)
    async with serve_in_loop(create_alipay_app(state), host) as url:
        yield LocalAlipay(f"{url}/gateway.do", state)
