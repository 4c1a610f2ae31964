"""Webhook intake benchmark: signed webhooks accepted and committed per second, and latency
percentiles, side by side with the bare baseline measured in the same run.

  make bench            (or: .venv/bin/python -m bench.intake --requests 20000 --concurrency 64)

Starts its own embedded PostgreSQL and broker in a temporary directory, runs the returns service
as its own process and the load generator as another, on loopback. Writes bench/results/intake.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import psutil

from apphost.embedded import EmbeddedKafka, EmbeddedPostgres, free_port
from bench import loadgen
from bench.baseline import run_baseline
from bench.procs import wait_ready
from returnflow import db
from returnflow.kafka import create_topics
from services.returns import SPEC

RESULTS = Path(__file__).parent / "results"


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--baseline-messages", type=int, default=20000)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rf-bench-"))
    pg = EmbeddedPostgres(tmp / "pg")
    pg.start()
    kafka = EmbeddedKafka(free_port(), log_path=tmp / "broker.log").start()
    try:
        admin = await asyncpg.connect(pg.uri("postgres"))
        await admin.execute("CREATE DATABASE bench")
        await admin.close()
        dsn = pg.uri("bench")
        await create_topics(kafka.bootstrap)
        await db.migrate(dsn, SPEC.schema, SPEC.migrations())
        print("baseline: produce → consume → insert, batched ...", flush=True)
        baseline = await run_baseline(kafka.bootstrap, dsn, a.baseline_messages)
        print(f"  {baseline['per_s']:.0f} msg/s", flush=True)

        port = free_port()
        env = {
            **os.environ,
            "RETURNFLOW_DATABASE_URL": dsn,
            "RETURNFLOW_KAFKA_BOOTSTRAP": kafka.bootstrap,
            "RETURNFLOW_RETURNS_PORT": str(port),
            "RETURNFLOW_RETURNS_WORKERS": os.environ.get("RETURNFLOW_RETURNS_WORKERS", "1"),
            "RETURNFLOW_LOG_FORMAT": "json",
            "RETURNFLOW_DEV_STACK": "true",  # its development secrets sign the load generator's webhooks
            "RETURNFLOW_KAFKA_SESSION_TIMEOUT_MS": "2000",
            "RETURNFLOW_KAFKA_HEARTBEAT_INTERVAL_MS": "400",
        }
        svc = subprocess.Popen(
            [sys.executable, "-m", "apphost.cli", "serve", "returns"],
            env=env,
            stdout=open(tmp / "returns.log", "wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            await wait_ready(f"http://127.0.0.1:{port}/readyz", svc)
            print(f"intake: {a.requests} signed webhooks, {a.concurrency} connections ...", flush=True)
            proc = psutil.Process(svc.pid)
            peak = [proc.memory_info().rss]

            async def sample() -> None:
                while True:
                    tree = [proc, *proc.children(recursive=True)]
                    peak[0] = max(peak[0], sum(p.memory_info().rss for p in tree))
                    await asyncio.sleep(0.2)

            sampler = asyncio.create_task(sample())
            spy = None
            if os.environ.get("BENCH_PROFILE"):
                spy = subprocess.Popen(
                    ["py-spy", "record", "-p", str(svc.pid), "-o", os.environ["BENCH_PROFILE"], "-f", "raw", "-d", "6"]
                )
            intake = await loadgen.run(port, a.requests, a.concurrency)
            if spy is not None:
                spy.wait()
            t_drain = time.perf_counter()
            conn = await asyncpg.connect(dsn, server_settings={"search_path": "returns"})
            while await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"):
                await asyncio.sleep(0.05)
            drain_s = time.perf_counter() - t_drain
            committed = await conn.fetchval("SELECT count(*) FROM returns")
            await conn.close()
            sampler.cancel()
        finally:
            svc.terminate()
            svc.wait(30)
    finally:
        kafka.stop()
        pg.stop()
    report = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "baseline": baseline,
        "intake": intake,
        "returns_committed": committed,
        "outbox_drain_after_load_s": drain_s,
        "returns_service_peak_rss_mb_all_workers": peak[0] / 2**20,
        "ratio_webhooks_to_baseline": intake["per_s"] / baseline["per_s"],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "intake.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    assert committed == intake["accepted"], "every 202 must be a committed return"


if __name__ == "__main__":
    asyncio.run(main())
