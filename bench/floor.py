"""The plumbing floor: what one signed webhook costs in CPU on this machine with nothing behind it,
and so the most lifecycles per second the workload leaves room for, whatever the services do.

- http: a FastAPI app served by uvicorn as the services are (one process, `apphost.cli`'s
  options), one route that checks the webhook signature, validates the body against the contract
  (`ReturnWebhook`) and answers 202: no database, no broker. The load generator (bench.loadgen, its
  own process, pre-signed requests over keep-alive connections) drives it; CPU seconds of the server
  and of the client's send phase per request.
- hop: the bare baseline (bench.baseline: batched produce → consume → insert) with the CPU seconds
  of the process running it, the broker and PostgreSQL per message (measured by bench.surge).
- ceiling = cores / (requests per lifecycle * CPU per request + hops per lifecycle * CPU per hop):
  the lifecycles per second left if the services did nothing but receive their HTTP requests and
  pass their messages on.

  .venv/bin/python -m bench.floor                 (the http floor alone, as JSON)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from apphost.embedded import free_port
from bench import loadgen
from bench.procs import cpu_seconds, wait_ready


def app() -> FastAPI:
    from returnflow.http import json_response, parse_json, required_header, signed_body
    from returnflow.settings import get_settings
    from services.returns.schemas import ReturnWebhook

    settings = get_settings()
    floor = FastAPI(title="returnflow http floor")

    @floor.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @floor.post("/v1/webhooks/generic/returns", status_code=202)
    async def webhook(request: Request) -> Response:
        raw = await signed_body(request, settings, "generic")
        delivery = required_header(request, "x-returnflow-delivery")
        body = parse_json(ReturnWebhook, raw)
        return json_response({"delivery": delivery, "platform_return_id": body.platform_return_id}, 202)

    return floor


async def http_floor(requests: int = 10_000, concurrency: int = 32) -> dict[str, Any]:
    port = free_port()
    env = {**os.environ, "RETURNFLOW_LOG_LEVEL": "WARNING"}
    server = subprocess.Popen([sys.executable, "-m", "bench.floor", "--serve", str(port)], env=env)
    try:
        # a cold start under a loaded machine (the suite beside it) took over 15 s once
        await wait_ready(f"http://127.0.0.1:{port}/healthz", server, timeout_s=60)
        cpu0 = cpu_seconds(server.pid)
        run = await loadgen.run(port, requests, concurrency, dup_every=0)
        server_cpu = cpu_seconds(server.pid) - cpu0
    finally:
        server.terminate()
        server.wait(10)
    n = max(1, run["requests"])
    return {
        "requests": run["requests"],
        "per_s": round(run["per_s"], 1),
        "statuses": run["statuses"],
        "p50_ms": round(run["p50_ms"], 2),
        "p99_ms": round(run["p99_ms"], 2),
        "server_cpu_ms_per_request": round(1000 * server_cpu / n, 4),
        "client_cpu_ms_per_request": round(1000 * run["cpu_s"] / n, 4),
        "cpu_ms_per_request": round(1000 * (server_cpu + run["cpu_s"]) / n, 4),
    }


def ceiling(
    cores: int, requests_per_lifecycle: float, http_ms: float, hops_per_lifecycle: float, hop_ms: float
) -> float:
    """Lifecycles per second if nothing but the HTTP requests and the message hops cost CPU."""
    per_lifecycle_ms = requests_per_lifecycle * http_ms + hops_per_lifecycle * hop_ms
    return cores * 1000 / per_lifecycle_ms if per_lifecycle_ms > 0 else 0.0


def serve(port: int) -> None:
    from apphost.cli import run_uvicorn

    run_uvicorn("bench.floor:app", "127.0.0.1", port)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve", type=int, help="(internal) serve the floor app on this port")
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=32)
    a = ap.parse_args()
    if a.serve:
        serve(a.serve)
        return
    t0 = time.perf_counter()
    result = asyncio.run(http_floor(a.requests, a.concurrency))
    result["elapsed_s"] = round(time.perf_counter() - t0, 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
