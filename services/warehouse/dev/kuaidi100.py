"""A local Kuaidi100 (快递100) for development and tests: its subscription API and its pushes, as documented.

    POST /poll          form: schema=json, param={company, number, key, parameters: {callbackurl, salt,
                        resultv2, autoCom}} -> {"result": bool, "returnCode": "...", "message": "..."}:
                        200 提交成功; 501 重复订阅 (the number is subscribed already); 600 the key is not a
                        subscriber's; 400 数据不完整 (a field missing or malformed, the number 6-32 chars);
                        700 no company and no autoCom
    POST /_sim/push     {"number", "state", "checkpoint": {ftime, context, status, statusCode, areaName}}:
                        adds the checkpoint to the number's history and pushes the whole history (newest
                        first) to the subscription's callbackurl, signed MD5(param + salt) uppercase;
                        answers what the callback answered
    POST /_sim/faults   {"count": n}: the next n subscriptions are answered HTTP 502 (Kuaidi100 busy)
    GET  /_sim/subscriptions   what was subscribed

State is in memory. Tests start it with `serve_kuaidi100`; `python -m services.warehouse.dev.kuaidi100`
runs it on its own.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from returnflow.local_server import serve_in_loop

ANSWERS = {
    "200": "提交成功",
    "400": "数据不完整",
    "500": "服务器错误",
    "501": "重复订阅",
    "600": "您不是合法的订阅者（即授权Key出错）",  # noqa: RUF001 (Kuaidi100's text)
    "700": "订阅方的订阅数据存在错误（如不支持的快递公司、单号为空、单号超长等）",  # noqa: RUF001
}


@dataclass
class Kuaidi100Sim:
    keys: set[str]
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)  # number -> the subscription's param
    history: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # number -> checkpoints, newest first
    requests: int = 0
    busy: int = 0  # the next n subscriptions answered 502

    def subscribe(self, form: dict[str, list[str]]) -> tuple[int, str]:
        """(HTTP status, returnCode) of a subscription."""
        self.requests += 1
        if self.busy:
            self.busy -= 1
            return 502, "500"
        try:
            param = json.loads(form["param"][0])
            number, key, parameters = param["number"], param["key"], param["parameters"]
            callback = parameters["callbackurl"]
        except (KeyError, IndexError, TypeError, ValueError):
            return 200, "400"
        if form.get("schema", ["json"])[0] != "json" or not isinstance(number, str) or not 6 <= len(number) <= 32:
            return 200, "400"
        if not isinstance(callback, str) or not callback.startswith(("http://", "https://")):
            return 200, "400"
        if key not in self.keys:
            return 200, "600"
        if not param.get("company") and parameters.get("autoCom") != "1":
            return 200, "700"
        if number in self.subscriptions:
            return 200, "501"
        self.subscriptions[number] = param
        return 200, "200"

    def push_form(self, number: str, state: str, checkpoint: dict[str, Any]) -> tuple[str, dict[str, str]]:
        """The callback URL and form of a push with this checkpoint added to the number's history."""
        sub = self.subscriptions[number]
        history = self.history.setdefault(number, [])
        history.insert(0, {"time": checkpoint.get("ftime"), **checkpoint})
        last = {"message": "ok", "nu": number, "com": sub.get("company") or "auto", "state": state, "ischeck": "0"}
        param = json.dumps(
            {"status": "polling", "message": "", "lastResult": last | {"status": "200", "data": history}},
            ensure_ascii=False,
        )
        salt = sub["parameters"].get("salt") or ""
        sign = hashlib.md5((param + salt).encode()).hexdigest().upper()
        return sub["parameters"]["callbackurl"], {"param": param, "sign": sign}

    async def push(self, number: str, state: str, checkpoint: dict[str, Any]) -> httpx.Response:
        url, form = self.push_form(number, state, checkpoint)
        async with httpx.AsyncClient(timeout=10) as client:
            return await client.post(url, data=form)


def create_app(sim: Kuaidi100Sim) -> FastAPI:
    app = FastAPI(title="local Kuaidi100", docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/poll")
    async def poll(request: Request) -> JSONResponse:
        form = parse_qs((await request.body()).decode(errors="replace"), keep_blank_values=True)
        status, code = sim.subscribe(form)
        return JSONResponse({"result": code == "200", "returnCode": code, "message": ANSWERS[code]}, status)

    @app.post("/_sim/push")
    async def push(request: Request) -> JSONResponse:
        body = await request.json()
        if body.get("number") not in sim.subscriptions:
            return JSONResponse({"error": "not subscribed"}, 404)
        r = await sim.push(body["number"], str(body.get("state", "0")), body["checkpoint"])
        return JSONResponse({"status": r.status_code, "answer": r.text})

    @app.post("/_sim/faults")
    async def faults(request: Request) -> JSONResponse:
        sim.busy = int((await request.json()).get("count", 1))
        return JSONResponse({"busy": sim.busy})

    @app.get("/_sim/subscriptions")
    async def subscriptions() -> JSONResponse:
        return JSONResponse({"subscriptions": sim.subscriptions, "requests": sim.requests})

    return app


@contextlib.asynccontextmanager
async def serve_kuaidi100(keys: set[str], host: str = "127.0.0.1") -> AsyncIterator[tuple[str, Kuaidi100Sim]]:
    """Run the local Kuaidi100 in this event loop; yields its base URL and its state."""
    sim = Kuaidi100Sim(keys)
    async with serve_in_loop(create_app(sim), host) as url:
        yield url, sim


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--port", type=int, default=8099)
    p.add_argument("--key", action="append", default=[], help="an accepted subscription key (repeatable)")
    args = p.parse_args(argv)
    uvicorn.run(create_app(Kuaidi100Sim(set(args.key) or {"dev-kuaidi100-key"})), host="127.0.0.1", port=args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
