"""The customer's page under load: GET /r/{token} at a steady rate (default 200/s) against `returnflow
up` while return webhooks arrive at half the surge's default peak (50/s of 100) with a courier scan for
each, next to the same process's static page (`/r/-`: the "link not valid" page, rendered without the
database) at the same rate. Reports p50/p95/p99 of both and the ratio.

  .venv/bin/python -m bench.page [--rate 200] [--seconds 20] [--intake 50]

Open loop: requests start on schedule whatever the answers do, so a slow answer cannot hide behind
fewer requests; latency is from the scheduled start to the answer read. Writes bench/results/page.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import orjson

from returnflow.links import link_token
from returnflow.signing import SIGNATURE_HEADER, sign
from services.returns.dev import CUSTOMER_LINK_SECRET
from tests.e2e.customer_support import CARRIER_SECRET, customer_env
from tests.e2e.test_up import base, start, stop, wait_ready
from tests.webhooks import return_body, signed

RESULTS = Path(__file__).parent / "results"


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p / 100 * len(s)))] * 1000 if s else float("nan")


async def steady(
    port: int, paths: list[str], rate: float, seconds: float, conns: int = 32, headers: str = ""
) -> dict[str, Any]:
    """GETs on schedule over keep-alive HTTP/1.1 connections with raw asyncio streams (a client this thin
    leaves the CPU to the stack; httpx here cost more than the page). `headers`: extra lines, each ending
    in CRLF (a session cookie)."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
    reqs = [
        f"GET {p} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept-Language: en\r\n{headers}\r\n".encode() for p in paths
    ]

    async def conn() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while (item := await queue.get()) is not None:
                due, req = item
                for _ in range(2):  # uvicorn closes a keep-alive connection idle for 5 s: reopen once
                    try:
                        writer.write(req)
                        head = await reader.readuntil(b"\r\n\r\n")
                        break
                    except (asyncio.IncompleteReadError, ConnectionError):
                        writer.close()
                        reader, writer = await asyncio.open_connection("127.0.0.1", port)
                length = next(
                    (int(line[15:]) for line in head.split(b"\r\n") if line[:15].lower() == b"content-length:"), 0
                )
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - due)
                statuses[int(head[9:12])] = statuses.get(int(head[9:12]), 0) + 1
        finally:
            writer.close()

    workers = [asyncio.create_task(conn()) for _ in range(conns)]
    t0, n = time.perf_counter(), int(rate * seconds)
    for i in range(n):
        due = t0 + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        queue.put_nowait((due, reqs[i % len(reqs)]))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return {
        "requests": len(latencies),
        "statuses": statuses,
        "p50_ms": round(pct(latencies, 50), 2),
        "p95_ms": round(pct(latencies, 95), 2),
        "p99_ms": round(pct(latencies, 99), 2),
    }


async def intake(env: dict[str, str], rate: float, stop_at: float, ids: list[str]) -> None:
    """Return webhooks at `rate`/s, each followed by a moving courier scan: the lifecycle load."""
    async with (
        httpx.AsyncClient(base_url=base(env, "returns"), timeout=10) as returns,
        httpx.AsyncClient(base_url=base(env, "warehouse"), timeout=10) as warehouse,
    ):

        async def one(n: int) -> None:
            tracking = f"BENCH{n:08d}{int(time.time())}"
            raw, headers = signed(return_body(tracking_no=tracking))
            r = await returns.post("/v1/webhooks/generic/returns", content=raw, headers=headers)
            if r.status_code == 202:
                ids.append(r.json()["return_id"])
            scan = orjson.dumps(
                {"tracking_no": tracking, "scan_code": "picked_up", "scanned_at": datetime.now(UTC).isoformat()}
            )
            h = {"content-type": "application/json", SIGNATURE_HEADER: sign(CARRIER_SECRET, scan)}
            await warehouse.post("/v1/webhooks/carriers/sf/scans", content=scan, headers=h)

        tasks, n, t0 = [], 0, time.perf_counter()
        while time.perf_counter() < stop_at:
            tasks.append(asyncio.create_task(one(n)))
            n += 1
            await asyncio.sleep(max(0.0, t0 + n / rate - time.perf_counter()))
        await asyncio.gather(*tasks, return_exceptions=True)


async def run(rate: float, seconds: float, intake_rate: float) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="returnflow-bench-page-"))
    env = customer_env(root / "data")
    proc = start(env)
    try:
        wait_ready(proc)
        ids: list[str] = []
        # returns to look at, and the lifecycle load in its steady state before anything is measured
        await intake(env, intake_rate, time.perf_counter() + 15, ids)
        secret = CUSTOMER_LINK_SECRET.encode()
        pages = [f"/r/{link_token(secret, UUID(rid))}" for rid in ids]
        port = int(env["RETURNFLOW_RETURNS_PORT"])
        out: dict[str, Any] = {}
        for name, paths in (("static", ["/r/-"]), ("page", pages)):
            load = asyncio.create_task(intake(env, intake_rate, time.perf_counter() + seconds, []))
            out[name] = await steady(port, paths, rate, seconds)
            await load
        out["ratio_p99"] = round(out["page"]["p99_ms"] / out["static"]["p99_ms"], 2)
        out["ratio_p50"] = round(out["page"]["p50_ms"] / out["static"]["p50_ms"], 2)
        out["setup"] = {"rate_per_s": rate, "seconds": seconds, "intake_per_s": intake_rate, "returns": len(ids)}
        return out
    finally:
        stop(proc)
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--intake", type=float, default=50.0, help="return webhooks/s meanwhile (surge peak 100 / 2)")
    ap.add_argument("--out", default=str(RESULTS / "page.json"))
    args = ap.parse_args()
    result = asyncio.run(run(args.rate, args.seconds, args.intake))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
