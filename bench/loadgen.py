"""Webhook load generator: its own process, loopback only, bounded in count and time.

Pre-signs every request, then replays them over keep-alive HTTP/1.1 connections with raw asyncio
streams (a client this thin leaves the CPU to the system under test). Prints a JSON report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from returnflow.signing import sign

KINDS = [("return_and_refund", 60), ("refund_only", 30), ("exchange", 10)]


def make_body(i: int, run: str) -> dict[str, Any]:
    kind = KINDS[0][0] if i % 10 < 6 else (KINDS[1][0] if i % 10 < 9 else KINDS[2][0])
    n = 1 + i % 3
    lines = [
        {
            "sku": f"SKU-{(i + k) % 500}",
            "qty": 1 + k % 2,
            "unit_price": 1990 + 100 * k,
            "reason": ["size_too_small", "damaged", "not_as_described"][k % 3],
        }
        for k in range(n)
    ]
    return {
        "platform_return_id": f"bench-{run}-{i}",
        "order_id": f"o-{run}-{i}",
        "shop_id": f"shop-{i % 20}",
        "kind": kind,
        "currency": "CNY",
        "paid_total": sum(x["qty"] * x["unit_price"] for x in lines),
        "lines": lines,
        "requested_at": datetime.now(UTC).isoformat(),
        "requested_by": {"type": "customer"},
        "customer": {
            "id": f"c-{i}",
            "phone": f"+86138{i % 100000000:08d}",
            "locale": "zh-CN",
            "timezone": "Asia/Shanghai",
        },
    }


def build_requests(n: int, host: str, port: int, secret: bytes, dup_every: int) -> list[bytes]:
    run = uuid.uuid4().hex[:8]
    out = []
    for i in range(n):
        j = i - 1 if dup_every and i % dup_every == 0 and i else i  # a duplicate delivery now and then
        raw = orjson.dumps(make_body(j, run))
        head = (
            f"POST /v1/webhooks/generic/returns HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n"
            f"X-Returnflow-Signature: {sign(secret, raw)}\r\nX-Returnflow-Delivery: {run}-{j}\r\n\r\n"
        )
        out.append(head.encode() + raw)
    return out


async def worker(
    host: str, port: int, queue: list[bytes], lat: list[float], statuses: dict[int, int], deadline: float
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while queue and time.monotonic() < deadline:
            req = queue.pop()
            t0 = time.perf_counter()
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def run(port: int, requests: int, concurrency: int, dup_every: int | None = None) -> dict[str, Any]:
    """Run this load generator in its own process against a loopback port; its JSON report."""
    args = ["--port", str(port), "--requests", str(requests), "--concurrency", str(concurrency)]
    if dup_every is not None:
        args += ["--dup-every", str(dup_every)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.loadgen", *args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    report: dict[str, Any] = json.loads(out)
    return report


def pct(sorted_vals: list[float], p: float) -> float:
    if not sorted_vals:
        return 0.0
    return sorted_vals[min(len(sorted_vals) - 1, int(p / 100 * len(sorted_vals)))]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--max-seconds", type=float, default=120)
    ap.add_argument("--secret", default="dev-generic-secret")
    ap.add_argument("--dup-every", type=int, default=50)
    a = ap.parse_args()
    if not a.host.startswith("127.") and a.host != "localhost":
        sys.exit("loadgen: loopback targets only")
    queue = build_requests(a.requests, a.host, a.port, a.secret.encode(), a.dup_every)
    queue.reverse()
    lat: list[float] = []
    statuses: dict[int, int] = {}
    t0, cpu0 = time.perf_counter(), time.process_time()
    deadline = time.monotonic() + a.max_seconds
    await asyncio.gather(*(worker(a.host, a.port, queue, lat, statuses, deadline) for _ in range(a.concurrency)))
    elapsed, cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
    lat.sort()
    print(
        json.dumps(
            {
                "requests": len(lat),
                "elapsed_s": elapsed,
                "per_s": len(lat) / elapsed,
                "statuses": statuses,
                "accepted": statuses.get(202, 0),
                "duplicates": statuses.get(200, 0),
                "p50_ms": pct(lat, 50) * 1000,
                "p95_ms": pct(lat, 95) * 1000,
                "p99_ms": pct(lat, 99) * 1000,
                "max_ms": (lat[-1] if lat else 0) * 1000,
                "concurrency": a.concurrency,
                "cpu_s": cpu_s,  # this client's CPU while sending (signing happened before)
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
