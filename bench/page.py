"""The customer's page under load: GET /r/{token} at a steady rate (default 200/s) against `returnflow
up` while `make bench`'s surge generator (bench/surgegen.py, its own process: webhooks, courier scans,
warehouse receipts, returns-team checks) runs at half the surge's default peak (50 of 100 returns/s),
next to the same process's static page (`/r/-`: the "link not valid" page, rendered without the
database) at the same rate and under the same surge. Reports p50/p95/p99 of both, their ratio, what
the surge achieved meanwhile, and the CPU the returns process and the whole machine used.

  .venv/bin/python -m bench.page [--rate 200] [--seconds 20] [--surge-peak 50] [--profile]
  .venv/bin/python -m bench.page --surge-peak 0 --out bench/results/page-alone.json   (no surge: CPU per page)

Open loop: requests start on schedule whatever the answers do, so a slow answer cannot hide behind
fewer requests; latency is from the scheduled start to the answer read. Writes bench/results/page.json
(--profile: a py-spy profile of the returns process during the page window, as raw folded stacks, in
$TMPDIR/returnflow-page-profile.txt).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import orjson
import psutil

from bench.surge import lag_quantiles
from bench.surgegen import CARRIER_SECRET as DEV_CARRIER_SECRET
from bench.surgegen import RETURN_SECRET as DEV_RETURN_SECRET
from returnflow.links import link_token
from returnflow.signing import SIGNATURE_HEADER, sign
from services.returns.dev import CUSTOMER_LINK_SECRET
from tests.e2e.test_up import base, stack_env, start, stop, wait_ready
from tests.webhooks import return_body, signed

RESULTS = Path(__file__).parent / "results"
PROFILE = Path(tempfile.gettempdir()) / "returnflow-page-profile.txt"  # --profile: py-spy's raw folded stacks


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


async def seed(env: dict[str, str], n: int) -> list[str]:
    """Returns for the page to show, each with a moving courier scan (so its page has two steps)."""
    ids: list[str] = []
    async with (
        httpx.AsyncClient(base_url=base(env, "returns"), timeout=30) as returns,
        httpx.AsyncClient(base_url=base(env, "warehouse"), timeout=30) as warehouse,
    ):

        async def one(i: int) -> None:
            tracking = f"PAGE{i:08d}{int(time.time())}"
            raw, headers = signed(return_body(tracking_no=tracking), DEV_RETURN_SECRET)
            r = await returns.post("/v1/webhooks/generic/returns", content=raw, headers=headers)
            assert r.status_code == 202, r.text
            ids.append(r.json()["return_id"])
            scan = orjson.dumps(
                {"tracking_no": tracking, "scan_code": "picked_up", "scanned_at": datetime.now(UTC).isoformat()}
            )
            h = {"content-type": "application/json", SIGNATURE_HEADER: sign(DEV_CARRIER_SECRET, scan)}
            await warehouse.post("/v1/webhooks/carriers/sf/scans", content=scan, headers=h)

        for chunk in range(0, n, 20):
            await asyncio.gather(*(one(i) for i in range(chunk, min(n, chunk + 20))))
    return ids


class Surge:
    """bench/surgegen.py in its own process, as `make bench` runs it; the last progress line it printed."""

    def __init__(self, env: dict[str, str], peak: float, ramp_s: float, hold_s: float, out: Path) -> None:
        self.args = [
            sys.executable,
            "-m",
            "bench.surgegen",
            *("--returns-port", env["RETURNFLOW_RETURNS_PORT"], "--warehouse-port", env["RETURNFLOW_WAREHOUSE_PORT"]),
            *("--audit-port", env["RETURNFLOW_AUDIT_PORT"], "--peak", str(peak), "--ramp-s", str(ramp_s)),
            *("--hold-s", str(hold_s), "--max-seconds", str(ramp_s + hold_s + 30), "--out", str(out)),
        ]
        self.last: dict[str, Any] = {}
        self.on = peak > 0  # --surge-peak 0: the page alone, for its CPU cost per request
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Surge:
        if self.on:
            self.proc = await asyncio.create_subprocess_exec(*self.args, stdout=asyncio.subprocess.PIPE)
            self.reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            if line.startswith(b"P "):
                self.last = orjson.loads(line[2:])

    def snapshot(self) -> dict[str, Any]:
        counts = {k: v for k, v in self.last.items() if k not in ("t", "elapsed", "offered_rate")}
        return {"t": time.time(), **counts}

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            self.proc.terminate()
        await self.proc.wait()
        self.reader.cancel()


def achieved(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """What the surge did per second between two snapshots (returns started, webhooks accepted, ...)."""
    dt = max(1e-9, after["t"] - before["t"])
    return {k: round((after.get(k, 0) - before.get(k, 0)) / dt, 1) for k in after if k != "t"}


def cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


def returns_pids(stack_pid: int) -> list[int]:
    """The returns service's processes among `returnflow up`'s children (`apphost.cli serve returns`)."""
    out = []
    for p in psutil.Process(stack_pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if p.cmdline()[-2:] == ["serve", "returns"]:
                out += [p.pid, *(c.pid for c in p.children(recursive=True))]
    return out


async def loop_lag(port: int) -> dict[float, float]:
    """The returns process's event-loop lag histogram (cumulative bucket counts) from its /metrics."""
    async with httpx.AsyncClient(timeout=30) as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith("returnflow_event_loop_lag_seconds_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return buckets


def postgres_pids(data_dir: Path) -> list[int]:
    """The embedded PostgreSQL's postmaster (its data directory is under ours) and its backends."""
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if cmd and cmd[0].endswith("postgres") and any(str(data_dir) in a for a in cmd):
            return [p.pid, *(c.pid for c in p.children(recursive=True))]
    return []


async def window(
    name: str, port: int, paths: list[str], rate: float, seconds: float, surge: Surge, pids: list[int], pg: Path
) -> dict[str, Any]:
    pg_pids = postgres_pids(pg)
    lag0 = await loop_lag(port)
    s0, c0, m0, t0 = surge.snapshot(), cpu_s(pids), psutil.cpu_times(), time.perf_counter()
    p0 = cpu_s(pg_pids)
    out = await steady(port, paths, rate, seconds)
    wall = time.perf_counter() - t0
    m1 = psutil.cpu_times()
    busy = (m1.user + m1.system - m0.user - m0.system) / (wall * (psutil.cpu_count() or 1))
    out["surge_per_s"] = achieved(s0, surge.snapshot())
    returns_cpu, pg_cpu = cpu_s(pids) - c0, cpu_s(pg_pids) - p0
    out["returns_loop_lag"] = lag_quantiles({"returns": lag0}, {"returns": await loop_lag(port)}).get("returns")
    out["returns_process_cpu"] = round(returns_cpu / wall, 2)  # cores
    out["postgres_cpu"] = round(pg_cpu / wall, 2)
    # per request served (the surge's share included when it runs: compare with --surge-peak 0)
    out["cpu_ms_per_request"] = {
        "returns": round(1000 * returns_cpu / out["requests"], 2),
        "postgres": round(1000 * pg_cpu / out["requests"], 2),
    }
    out["machine_cpu_busy"] = round(busy, 2)
    print(f"{name}: {json.dumps(out)}", flush=True)
    return out


async def run(rate: float, seconds: float, peak: float, profile: bool) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="returnflow-bench-page-"))
    env = stack_env(root / "data")
    # the development secrets the surge generator signs with (as on `make bench`), and make bench's settings
    del env["RETURNFLOW_WEBHOOK_SECRETS"], env["RETURNFLOW_RETURNS_WORKERS"]
    env.update({"RETURNFLOW_LOG_LEVEL": "WARNING", "RETURNFLOW_REFUNDS_AUTHORITY_PRESET": "full_trust"})
    env.update({"RETURNFLOW_NOTIFY_SENDER_RATE_PER_S": "100000", "RETURNFLOW_NOTIFY_SENDER_BURST": "1000"})
    proc = start(env)
    try:
        wait_ready(proc)
        assert proc.stdout is not None
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # never let its pipe fill
        ids = await seed(env, 200)
        secret = CUSTOMER_LINK_SECRET.encode()
        pages = [f"/r/{link_token(secret, UUID(rid))}" for rid in ids]
        port = int(env["RETURNFLOW_RETURNS_PORT"])
        pids = returns_pids(proc.pid)
        ramp, warm = 10.0, 10.0
        out: dict[str, Any] = {}
        async with Surge(env, peak, ramp, ramp + warm + 2 * seconds + 5, root / "surge.jsonl") as surge:
            if surge.on:
                await asyncio.sleep(ramp + warm)  # the surge at its (half) peak, in its steady state
            out["static"] = await window("static", port, ["/r/-"], rate, seconds, surge, pids, root)
            spy = None
            if profile:
                spy = await asyncio.create_subprocess_exec(
                    str(Path(sys.executable).parent / "py-spy"),
                    *("record", "--gil", "-r", "100", "-d", str(int(seconds)), "-f", "raw"),
                    *("-o", str(PROFILE), "-p", str(pids[0])),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
            out["page"] = await window("page", port, pages, rate, seconds, surge, pids, root)
            if spy is not None:
                await spy.wait()
        out["ratio_p99"] = round(out["page"]["p99_ms"] / out["static"]["p99_ms"], 2)
        out["ratio_p50"] = round(out["page"]["p50_ms"] / out["static"]["p50_ms"], 2)
        out["setup"] = {
            "rate_per_s": rate,
            "seconds": seconds,
            "surge_peak_per_s": peak,
            "returns_shown": len(ids),
            "returns_processes": len(pids),
            "cores": psutil.cpu_count(),
        }
        return out
    finally:
        stop(proc)
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument(
        "--surge-peak", type=float, default=50.0, help="returns/s of the surge meanwhile (make bench's 100 / 2)"
    )
    ap.add_argument("--profile", action="store_true", help="py-spy the returns process in the page window")
    ap.add_argument("--out", default=str(RESULTS / "page.json"))
    args = ap.parse_args()
    result = asyncio.run(run(args.rate, args.seconds, args.surge_peak, args.profile))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
