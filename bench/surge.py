"""Promotion-surge benchmark: the whole stack (embedded PostgreSQL + broker, all five services as
their own processes, the simulated payment gateway) under a surge from a separate load-generator
process (bench/surgegen.py), side by side with the bare baseline measured in the same run.

  make bench                                   (defaults: a few minutes on 2 cores)
  .venv/bin/python -m bench.surge --peak 150 --ramp-s 30 --hold-s 60   (the full 60 s at peak)
  .venv/bin/python -m bench.surge --tracing off      (tracing's cost: alternate with --tracing on, compare
                                                     per_lifecycle.cpu_ms)

Definitions
- accepted webhooks/s: 202 answers to signed return webhooks per second of offered load.
- a lifecycle is COMPLETE when every step that applies to its kind has happened:
  refund issued (refunds.issued) for return_and_refund and refund_only; the replacement delivered
  (exchanges.replacement-delivered, from its outgoing parcel's delivered scan) for exchange; the
  customer's first SMS sent (sms.sent) for all kinds; and every received line dual-check verified
  (inventory.verified, one per line; an exchange's replacement lines leaving stock too) for
  return_and_refund and exchange (goods come back). Its completion time is the latest of those event times.
- latencies: webhook ack (client-side, request written on a free keep-alive connection → response
  read; the time spent waiting for a free connection is reported apart as webhook_client_queue); request → first SMS
  (webhook sent → first sms.sent); moving scan → refund issued (the later of the picked_up scan's
  ack and the webhook's ack → first refunds.issued; return_and_refund only); receipt → dual-check
  verified (receipt ack → last inventory.verified of the return). Event times are the Kafka record
  timestamps of the events, read by a real consumer in this process; all clocks are this machine's.
- message hops: messages consumed by all consumer groups (sum of every group's committed offsets);
  efficiency = hops/s during the surge ÷ baseline messages/s (one hop each: produce → consume → insert).

Writes bench/results/surge.json and bench/results/surge.png.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import orjson
import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition

from apphost.embedded import free_port
from apphost.registry import SERVICES, base_url_for, port_for
from bench.baseline import run_baseline
from bench.floor import ceiling, http_floor
from bench.procs import cpu_seconds, cpu_seconds_of, tree

RESULTS = Path(__file__).parent / "results"
EVENT_TOPICS = [
    "sms.sent",
    "refunds.issued",
    "inventory.verified",
    "parcels.scanned",
    "refunds.decided",
    "exchanges.replacement-delivered",
]
TZ_CANDIDATES = ["Europe/London", "Asia/Shanghai", "America/New_York", "America/Los_Angeles", "Asia/Tokyo"]


def daytime_zone() -> str:
    """A timezone where it is now well inside the day, so no SMS waits for the recipient's morning."""
    now = datetime.now(UTC)
    for name in TZ_CANDIDATES:
        if 9 <= now.astimezone(ZoneInfo(name)).hour <= 18:
            return name
    return "Pacific/Kiritimati" if 9 <= now.astimezone(ZoneInfo("Pacific/Kiritimati")).hour <= 18 else "Asia/Kolkata"


def pct(vals: list[float], p: float) -> float | None:
    if not vals:
        return None
    s = sorted(vals)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def summary_ms(vals: list[float]) -> dict[str, Any]:
    return {
        "n": len(vals),
        "p50_ms": _ms(pct(vals, 50)),
        "p95_ms": _ms(pct(vals, 95)),
        "p99_ms": _ms(pct(vals, 99)),
        "max_ms": _ms(max(vals) if vals else None),
    }


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 1)


def _epoch(iso: str | None, default: float) -> float:
    try:
        return datetime.fromisoformat(iso).timestamp() if iso else default
    except ValueError:
        return default


class Collector:
    """Consumes the outcome topics and keeps, per return, the first sms.sent / refunds.issued time and
    the inventory.verified times."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.sms: dict[str, float] = {}
        self.refund: dict[str, float] = {}
        self.verified: dict[str, list[float]] = defaultdict(list)
        self.delivered: dict[str, float] = {}  # an exchange's replacement delivered
        self.counts: dict[str, int] = defaultdict(int)
        # where the time between a moving scan and its refund goes: (published, occurred) per step
        self.moving_scan: dict[str, float] = {}
        self.decided: dict[str, tuple[float, float]] = {}
        self.issued: dict[str, tuple[float, float]] = {}

    async def run(self, stop: asyncio.Event) -> None:
        c = AIOKafkaConsumer(
            *EVENT_TOPICS,
            bootstrap_servers=self.bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            max_poll_records=2000,
        )
        await c.start()
        try:
            while not stop.is_set():
                batches = await c.getmany(timeout_ms=200, max_records=2000)
                for tp, recs in batches.items():
                    for r in recs:
                        v = orjson.loads(r.value)
                        rid = v.get("return_id")
                        t = r.timestamp / 1000 if r.timestamp and r.timestamp > 0 else time.time()
                        self.counts[tp.topic] += 1
                        if tp.topic == "sms.sent":
                            self.sms.setdefault(rid, t)
                        elif tp.topic == "refunds.issued":
                            self.refund.setdefault(rid, t)
                            self.issued.setdefault(rid, (t, _epoch(v.get("occurred_at"), t)))
                        elif tp.topic == "inventory.verified":
                            self.verified[rid].append(t)
                        elif tp.topic == "exchanges.replacement-delivered":
                            self.delivered.setdefault(rid, t)
                        elif tp.topic == "parcels.scanned":
                            if v.get("first_moving"):
                                self.moving_scan.setdefault(rid, t)
                        elif v.get("decision") == "refund" and v.get("basis") == "early_scan":
                            self.decided.setdefault(rid, (t, _epoch(v.get("occurred_at"), t)))
        finally:
            await c.stop()


class Sampler:
    """Every second: RSS per service (process tree), outbox backlog per schema, lag per consumer group."""

    def __init__(self, stack: Any, dsn: str, bootstrap: str) -> None:
        self.stack, self.dsn, self.bootstrap = stack, dsn, bootstrap
        self.samples: list[dict[str, Any]] = []
        self.peak_rss: dict[str, float] = defaultdict(float)
        self.cpu_s: dict[str, float] = {}
        self.cpu_used: dict[str, float] = {}
        self.extra: dict[str, int] = {}  # other processes to watch: name -> pid

    def rss(self) -> dict[str, float]:
        out = {}
        pids = {n: c.proc.pid for n, c in self.stack.children.items() if c.proc is not None}
        pids.update(self.extra)
        for name, pid in pids.items():
            try:
                procs = tree(pid)
                out[name] = sum(x.memory_info().rss for x in procs) / 2**20
                self.cpu_s[name] = cpu_seconds_of(procs)
            except psutil.Error:
                continue
            self.peak_rss[name] = max(self.peak_rss[name], out[name])
        return out

    async def lag(self, consumers: dict[str, AIOKafkaConsumer], ends_c: AIOKafkaConsumer) -> dict[str, int]:
        from apphost.ops import consumer_groups

        groups = consumer_groups()
        tps = {t: [TopicPartition(t, p) for p in sorted(ends_c.partitions_for_topic(t) or ())] for t in EVERY_TOPIC}
        all_tps = [tp for v in tps.values() for tp in v]
        ends = await ends_c.end_offsets(all_tps)
        out = {}
        for g, topics in groups.items():
            c = consumers[g]
            lag = 0
            for t in topics:
                for tp in tps.get(t, []):
                    committed = await c.committed(tp) or 0
                    lag += max(0, ends.get(tp, 0) - committed)
            out[g] = lag
        return out

    async def committed_total(self, consumers: dict[str, AIOKafkaConsumer], ends_c: AIOKafkaConsumer) -> int:
        from apphost.ops import consumer_groups

        total = 0
        for g, topics in consumer_groups().items():
            for t in topics:
                for p in sorted(ends_c.partitions_for_topic(t) or ()):
                    total += await consumers[g].committed(TopicPartition(t, p)) or 0
        return total

    async def run(self, stop: asyncio.Event, t0: float) -> None:
        from apphost.ops import consumer_groups

        conn = await asyncpg.connect(self.dsn)
        consumers = {
            g: AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=g, enable_auto_commit=False)
            for g in consumer_groups()
        }
        ends_c = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None)
        for c in [*consumers.values(), ends_c]:
            await c.start()
        self.consumers, self.ends_c = consumers, ends_c
        try:
            while not stop.is_set():
                s: dict[str, Any] = {"t": time.time() - t0, "rss_mb": self.rss()}
                outbox = {}
                for name in SERVICES:
                    with contextlib.suppress(asyncpg.PostgresError):
                        outbox[name] = await conn.fetchval(
                            f"SELECT count(*) FROM {name}.outbox WHERE published_at IS NULL"
                        )
                s["outbox_backlog"] = outbox
                with contextlib.suppress(Exception):
                    s["consumer_lag"] = await self.lag(consumers, ends_c)
                self.samples.append(s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
        finally:
            await conn.close()

    async def close(self) -> None:
        for c in [*self.consumers.values(), self.ends_c]:
            await c.stop()


EVERY_TOPIC: list[str] = []


async def seed_roster(dsn: str) -> None:
    """The development roster (as `make run` seeds it): refund-only requests name agent-amy."""
    from services.refunds import repository
    from services.refunds.dev import DEV_ROSTER

    conn = await asyncpg.connect(dsn, server_settings={"search_path": "refunds"})
    try:
        async with conn.transaction():
            await repository.seed_roster(conn, list(DEV_ROSTER))
    finally:
        await conn.close()


def preload_pg_stat_statements(pgdata: Path) -> None:
    """Initialise the embedded PostgreSQL's data directory with pg_stat_statements preloaded."""
    from apphost.embedded import EmbeddedPostgres

    pg = EmbeddedPostgres(pgdata)
    pg.start()
    pg.stop()
    with open(pgdata / "postgresql.conf", "a") as f:
        f.write("\nshared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = all\n")


async def reset_pg_stats(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await conn.execute("SELECT pg_stat_statements_reset()")
        await conn.execute("SELECT pg_stat_reset()")
    finally:
        await conn.close()


async def top_statements(dsn: str, n: int = 60) -> dict[str, Any]:
    """The statements PostgreSQL spent most execution time on during the run, with calls and rows."""
    conn = await asyncpg.connect(dsn)
    try:
        db = await conn.fetchrow(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        )
        total = await conn.fetchval("SELECT sum(total_exec_time + total_plan_time) FROM pg_stat_statements")
        calls = await conn.fetchval("SELECT sum(calls) FROM pg_stat_statements")
        rows = await conn.fetch(
            """SELECT s.query, s.calls, s.rows, s.total_exec_time + s.total_plan_time AS ms,
                      s.shared_blks_hit + s.shared_blks_read AS blocks, s.wal_bytes
               FROM pg_stat_statements s
               ORDER BY ms DESC LIMIT $1""",
            n,
        )
        # Tables read by sequential scan: a plan cached while a table was small keeps scanning it whole.
        scans = await conn.fetch(
            """SELECT schemaname || '.' || relname AS rel, seq_scan, seq_tup_read, idx_scan, n_live_tup,
                      autoanalyze_count
               FROM pg_stat_user_tables WHERE seq_tup_read > 0 ORDER BY seq_tup_read DESC LIMIT 15"""
        )
    finally:
        await conn.close()
    return {
        "tables_by_rows_seq_read": [dict(r) for r in scans],
        "commits": db["xact_commit"] if db else None,
        "statements": int(calls or 0),
        "rollbacks": db["xact_rollback"] if db else None,
        "top": [
            {
                "share": round(float(r["ms"]) / float(total or 1), 4),
                "ms": round(float(r["ms"]), 1),
                "calls": r["calls"],
                "rows": r["rows"],
                "blocks": r["blocks"],  # buffers touched: a CPU proxy that lock waits do not inflate
                "wal_bytes": int(r["wal_bytes"]),
                "query": " ".join(r["query"].split())[:300],
            }
            for r in rows
        ],
    }


async def loop_lag_buckets(settings: Any) -> dict[str, dict[float, float]]:
    """Each service's event-loop lag histogram (cumulative bucket counts) from its /metrics."""
    import httpx

    out: dict[str, dict[float, float]] = {}
    async with httpx.AsyncClient(timeout=5) as client:
        for name in SERVICES:
            with contextlib.suppress(httpx.HTTPError):
                text = (await client.get(f"{base_url_for(settings, name)}/metrics")).text
                buckets: dict[float, float] = {}
                for line in text.splitlines():
                    if line.startswith("returnflow_event_loop_lag_seconds_bucket{"):
                        le = line.split('le="', 1)[1].split('"', 1)[0]
                        buckets[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
                out[name] = buckets
    return out


def _bucket_edge_ms(cumulative: list[tuple[float, float]], p: float) -> float | None:
    """The first bucket edge (ms) holding a share p of the observations; None past the last finite edge."""
    total = cumulative[-1][1]
    edge = next((le for le, n in cumulative if n >= p * total), None)
    return None if edge is None or edge == float("inf") else round(edge * 1000, 1)


def lag_quantiles(before: dict[str, dict[float, float]], after: dict[str, dict[float, float]]) -> dict[str, Any]:
    """p50 / p99 upper bounds (bucket edges, ms) of the loop lag observed between two scrapes."""
    result: dict[str, Any] = {}
    for name, buckets in after.items():
        cumulative = sorted((le, n - before.get(name, {}).get(le, 0.0)) for le, n in buckets.items())
        if not cumulative or cumulative[-1][1] <= 0:
            continue
        result[name] = {
            "samples": int(cumulative[-1][1]),
            "p50_ms_at_most": _bucket_edge_ms(cumulative, 0.5),
            "p99_ms_at_most": _bucket_edge_ms(cumulative, 0.99),
        }
    return result


def embedded_parts(stack: Any, tmp: Path) -> dict[str, int]:
    """Process ids of the embedded PostgreSQL (postmaster) and broker, to sample their CPU and RSS."""
    found: dict[str, int] = {}
    if stack.postgres is not None:
        with contextlib.suppress(Exception):
            found["postgres"] = next(
                p.pid
                for p in psutil.process_iter(["name", "cmdline"])
                if p.info["name"] == "postgres" and str(tmp) in " ".join(p.info["cmdline"] or [])
            )
    if stack.kafka is not None:
        with contextlib.suppress(Exception):
            found["broker"] = next(p.pid for p in psutil.Process().children(recursive=True) if "tansu" in p.name())
    return found


def cpu_by_pid() -> dict[int, float]:
    out = {}
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            out[p.pid] = sum(p.cpu_times()[:2])
    return out


def bar(frac: float, width: int = 28) -> str:
    n = int(max(0.0, min(1.0, frac)) * width)
    return "█" * n + "·" * (width - n)


async def read_generator(
    proc: asyncio.subprocess.Process, progress: list[dict[str, Any]], col: Collector, total: int
) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    assert proc.stdout is not None
    async for raw in proc.stdout:
        line = raw.decode().rstrip()
        if line.startswith("P "):
            p = json.loads(line[2:])
            progress.append(p)
            sys.stdout.write(
                f"\r  surge {bar(p['elapsed'] / total)} {p['elapsed']:5.1f}s  offered {p['offered_rate']:5.0f}/s  "
                f"started {p['started']:6d}  accepted {p.get('webhooks_accepted', 0):6d}  "
                f"refunds {col.counts['refunds.issued']:6d}  sms {col.counts['sms.sent']:6d}  "
                f"verified {col.counts['inventory.verified']:6d} "
            )
            sys.stdout.flush()
        elif line.startswith("S "):
            summary = json.loads(line[2:])
    print()
    return summary


def lifecycles(records: list[dict[str, Any]], col: Collector) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    done: list[dict[str, Any]] = []
    lat: dict[str, list[float]] = defaultdict(list)
    for r in records:
        if "t_ack" in r:
            lat["webhook_ack"].append(r["t_ack"] - r["t_send"])
        rid = r.get("return_id")
        if not rid:
            continue
        kind = r["kind"]
        sms = col.sms.get(rid)
        refund = col.refund.get(rid)
        ver = col.verified.get(rid, [])
        if sms is not None:
            lat["request_to_first_sms"].append(sms - r["t_send"])
        if kind == "return_and_refund" and refund is not None and "t_scan_ack" in r:
            start = max(r["t_scan_ack"], r["t_ack"])
            lat["moving_scan_to_refund_issued"].append(refund - start)
            # a scan that came before its return (10 % of parcels) waits for the warehouse to learn the return:
            # its refund's path holds one more relay and one more consumer hop
            first = "scan_first" if r.get("scan_before_return") else "scan_after_return"
            lat[f"moving_scan_to_refund_issued:{first}"].append(refund - start)
            scan_pub, dec, iss = col.moving_scan.get(rid), col.decided.get(rid), col.issued.get(rid)
            if scan_pub is not None and dec is not None and iss is not None and scan_pub >= start - 1:
                # the steps of an early refund, from Kafka record times and the events' occurred_at
                lat["stage:scan_ack_to_scan_published"].append(scan_pub - start)
                lat["stage:scan_published_to_refund_decided"].append(dec[1] - scan_pub)
                lat["stage:refund_decided_to_decision_published"].append(dec[0] - dec[1])
                lat["stage:refund_decided_to_gateway_paid"].append(iss[1] - dec[1])
                lat["stage:gateway_paid_to_issued_published"].append(iss[0] - iss[1])
        goods = kind in ("return_and_refund", "exchange")
        # an exchange's replacement leaving stock is a dual-checked movement too (one per line)
        movements = r.get("lines", 0) + (r.get("replacement_lines", 0) if kind == "exchange" else 0)
        all_verified = goods and "lines" in r and len(ver) >= movements
        if all_verified:
            lat["receipt_to_dual_check_verified"].append(max(ver) - r["t_receipt_ack"])
        delivered = col.delivered.get(rid)
        if kind == "exchange" and delivered is not None and "t_delivered_scan_ack" in r:
            lat["delivered_scan_to_replacement_delivered"].append(delivered - r["t_delivered_scan_ack"])
        needs = [sms]
        if kind != "exchange":
            needs.append(refund)
        else:  # an exchange is done for the customer when the new item arrives
            needs.append(delivered)
        if goods:
            needs.append(max(ver) if all_verified else None)
        if all(t is not None for t in needs):
            done.append({"kind": kind, "t_send": r["t_send"], "t_done": max(t for t in needs if t is not None)})
    return done, lat


class Load:
    """Runs the load generator (bench/surgegen.py) against the stack, one phase at a time."""

    def __init__(self, a: argparse.Namespace, tmp: Path, tz: str, col: Collector, sampler: Sampler) -> None:
        self.a, self.tmp, self.tz, self.col, self.sampler = a, tmp, tz, col, sampler

    async def start(
        self, name: str, peak: float, ramp_s: float, hold_s: float, start_fraction: float
    ) -> asyncio.subprocess.Process:
        self.records_path = self.tmp / name
        gen = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.surgegen",
            *("--returns-port", str(port_for("returns"))),
            *("--warehouse-port", str(port_for("warehouse"))),
            *("--audit-port", str(port_for("audit"))),
            *("--peak", str(peak), "--ramp-s", str(ramp_s), "--hold-s", str(hold_s)),
            *("--start-fraction", str(start_fraction)),
            *("--max-returns", str(self.a.max_returns), "--connections", str(self.a.connections)),
            *("--max-seconds", str(ramp_s + hold_s + 120)),
            *("--timezone", self.tz, "--out", str(self.records_path)),
            stdout=asyncio.subprocess.PIPE,
        )
        self.sampler.extra["load-generator"] = gen.pid
        return gen

    async def finish(
        self, gen: asyncio.subprocess.Process, total_s: float
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any], float]:
        """(records, progress lines, the generator's summary, when it ended) once it has sent its load."""
        progress: list[dict[str, Any]] = []
        gsum = await read_generator(gen, progress, self.col, total_s)
        await gen.wait()
        t_end = time.time()
        records = [orjson.loads(x) for x in self.records_path.read_bytes().splitlines()]
        return records, progress, gsum, t_end


async def drain(records: list[dict[str, Any]], col: Collector, sampler: Sampler, timeout_s: float) -> None:
    """Wait until every accepted lifecycle is complete, or the backlog is gone, or time is up."""
    wanted = sum(1 for r in records if r.get("return_id"))
    print(f"surge: load done ({len(records)} returns); draining ...", flush=True)
    deadline = time.time() + timeout_s
    last_change, last_n = time.time(), -1
    while time.time() < deadline:
        done, _ = lifecycles(records, col)
        if len(done) != last_n:
            last_change, last_n = time.time(), len(done)
        last = sampler.samples[-1] if sampler.samples else {}
        backlog = sum((last.get("outbox_backlog") or {}).values()) + sum((last.get("consumer_lag") or {}).values())
        sys.stdout.write(
            f"\r  drain {bar(len(done) / max(1, wanted))} complete {len(done)}/{wanted}  backlog {backlog} "
        )
        sys.stdout.flush()
        if len(done) >= wanted or (backlog == 0 and time.time() - last_change > 10):
            break
        await asyncio.sleep(1.0)
    print()


# issue 17's latency targets at half of the capacity measured in the same run (p99, ms)
TARGETS_P99_MS = {
    "webhook_ack": 100.0,
    "moving_scan_to_refund_issued": 500.0,
    "request_to_first_sms": 2000.0,
    "receipt_to_dual_check_verified": 2000.0,
}


async def at_share_of_capacity(a: argparse.Namespace, load: Load, capacity: float, t0: float) -> dict[str, Any]:
    """The second phase: once the surge has drained, a steady load at `--share` of the capacity the surge
    measured (its best sustained completions/s), for `--share-s` seconds; the latencies of those returns
    against the targets, and the largest consumer lag and outbox backlog meanwhile."""
    rate = round(max(1.0, capacity * a.share), 1)
    print(f"steady: {rate:.1f} returns/s = {a.share:.0%} of the {capacity:.1f}/s measured, for {a.share_s:.0f}s")
    gen = await load.start("records-steady.jsonl", rate, 1.0, a.share_s, start_fraction=1.0)
    t_start = time.time()
    cpu0 = dict(load.sampler.cpu_s) | {"load-generator": 0.0}  # the phase's generator is a new process
    harness0 = time.process_time()
    records, _, gsum, t_end = await load.finish(gen, 1.0 + a.share_s)
    await drain(records, load.col, load.sampler, a.drain_timeout_s)
    cpu1 = dict(load.sampler.cpu_s) | {"harness": time.process_time() - harness0}
    done, lat = lifecycles(records, load.col)
    during = [s for s in load.sampler.samples if t_start - t0 <= s["t"] <= t_end - t0]
    latency = {k: summary_ms(v) for k, v in lat.items()}
    targets = {
        k: {"p99_ms": latency.get(k, {}).get("p99_ms"), "target_ms": limit}
        | {"met": (latency.get(k, {}).get("p99_ms") or float("inf")) < limit}
        for k, limit in TARGETS_P99_MS.items()
    }
    return {
        "share": a.share,
        "capacity_lifecycles_per_s": capacity,
        "offered_returns_per_s": rate,
        "seconds": a.share_s,
        "returns_started": len(records),
        "webhooks_accepted": sum(1 for r in records if r.get("status") == 202),
        "lifecycles_complete": len(done),
        # CPU of each process from the phase's start until it drained, per lifecycle of the phase (harness:
        # this process — the collector reading the six outcome topics, and the sampler — not part of the stack)
        "cpu_ms_per_lifecycle_by_process": {
            k: round(1000 * (v - cpu0.get(k, 0.0)) / max(1, len(done)), 1) for k, v in cpu1.items()
        },
        "latency": latency,
        "targets": targets,
        "max_consumer_lag": max((sum(s.get("consumer_lag", {}).values()) for s in during), default=0),
        "max_consumer_lag_by_group": {
            g: max((s.get("consumer_lag", {}).get(g, 0) for s in during), default=0)
            for g in sorted({g for s in during for g in s.get("consumer_lag", {})})
        },
        "max_outbox_backlog": max((sum(s.get("outbox_backlog", {}).values()) for s in during), default=0),
        "generator_errors": gsum.get("errors", {}),
    }


def best_span(a: argparse.Namespace) -> int:
    """The rolling window (s) of the sustained rate: as long as the hold phase, at most 60 s."""
    return max(1, min(60, int(a.hold_s)))


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peak", type=float, default=100.0, help="returns started per second at the peak")
    ap.add_argument("--ramp-s", type=float, default=20.0)
    ap.add_argument("--hold-s", type=float, default=20.0, help="seconds at the peak (60 for the full run)")
    ap.add_argument("--max-returns", type=int, default=100_000)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--drain-timeout-s", type=float, default=90.0)
    ap.add_argument("--baseline-messages", type=int, default=20_000)
    ap.add_argument(
        "--keep-data",
        action="store_true",
        help="keep the run's temp dir (databases, logs, records; ~0.5 GB) instead of removing it at the end "
        "(kept anyway with --profile: the profiles are there)",
    )
    ap.add_argument(
        "--profile",
        default="",
        help="py-spy these services (comma-separated names) during the load; raw profiles in the temp dir",
    )
    ap.add_argument(
        "--pg-stats",
        action="store_true",
        help="load pg_stat_statements and report the statements PostgreSQL spent most time on",
    )
    ap.add_argument(
        "--gateway",
        choices=["simulated", "stripe"],
        default="simulated",
        help="the refunds provider: the simulator, or the Stripe adapter against the local Stripe",
    )
    ap.add_argument(
        "--tracing",
        choices=["on", "off"],
        default="on",
        help="on: the services trace as deployed (head sampling at --trace-rate, spans to files in the temp dir); "
        "off: RETURNFLOW_TRACE_ENABLED=false (no trace context at all). Alternate runs to measure its CPU cost",
    )
    ap.add_argument("--trace-rate", type=float, default=0.01, help="--tracing on: the share of traces recorded")
    ap.add_argument(
        "--share-s",
        type=float,
        default=30.0,
        help="then, once drained: a steady load at --share of the capacity just measured for this many seconds, "
        "its latencies against the targets (0: skip)",
    )
    ap.add_argument("--share", type=float, default=0.5, help="the steady phase's share of the measured capacity")
    ap.add_argument(
        "--cores",
        type=int,
        default=0,
        help="pin the whole run (stack, generator, this harness) to the first N cores (taskset): scaling evidence",
    )
    ap.add_argument("--out", default=str(RESULTS / "surge.json"))
    a = ap.parse_args()

    from contracts.catalog import CATALOG

    EVERY_TOPIC.extend(t.name for t in CATALOG)
    if a.cores:
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: a.cores]))  # children inherit it
    tmp = Path(tempfile.mkdtemp(prefix="rf-surge-"))
    env = {
        "RETURNFLOW_DATA_DIR": str(tmp / "data"),
        "RETURNFLOW_EMBEDDED_KAFKA_PORT": str(free_port()),
        "RETURNFLOW_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "RETURNFLOW_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
        "RETURNFLOW_LOG_LEVEL": os.environ.get("RETURNFLOW_LOG_LEVEL", "WARNING"),
        "RETURNFLOW_LOG_FORMAT": "json",
        # refund-only requests are filed by an agent with full-trust authority, so they refund at once
        "RETURNFLOW_REFUNDS_AUTHORITY_PRESET": "full_trust",
        # the file SMS provider has no rate limit of its own; every customer has their own number
        "RETURNFLOW_NOTIFY_SENDER_RATE_PER_S": os.environ.get("RETURNFLOW_NOTIFY_SENDER_RATE_PER_S", "100000"),
        "RETURNFLOW_NOTIFY_SENDER_BURST": "1000",
        # the sender decides and sends in rounds of `claim_batch`: 50 at a time with 8 concurrent sends
        # capped it far below the surge (measured: first-SMS p50 25 s → 10 s with these)
        "RETURNFLOW_NOTIFY_CLAIM_BATCH": "500",
        "RETURNFLOW_NOTIFY_SEND_CONCURRENCY": "64",
        # --gateway stripe: the local Stripe runs beside the stack (its dev key and webhook secret)
        **(
            {"RETURNFLOW_REFUNDS_GATEWAY": "stripe", "RETURNFLOW_REFUNDS_STRIPE_LOCAL": "true"}
            if a.gateway == "stripe"
            else {}
        ),
        **{k: os.environ[k] for k in os.environ if k.startswith("RETURNFLOW_")},
        # stated, whatever the environment says: `returnflow up` alone would record every trace
        **(
            {
                "RETURNFLOW_TRACE_ENABLED": "true",
                "RETURNFLOW_TRACE_SAMPLE_RATE": str(a.trace_rate),
                "RETURNFLOW_TRACE_EXPORTER": "file",
            }
            if a.tracing == "on"
            else {"RETURNFLOW_TRACE_ENABLED": "false", "RETURNFLOW_TRACE_EXPORTER": "none"}
        ),
    }
    for name in SERVICES:
        env[f"RETURNFLOW_{name.upper()}_PORT"] = str(free_port())
    os.environ.update(env)
    from apphost.stack import Stack
    from returnflow.settings import Settings

    settings = Settings()
    stack = Stack(settings, out=lambda s: print(s, flush=True))
    if a.pg_stats:
        await asyncio.to_thread(preload_pg_stat_statements, settings.data_dir / "postgres")
    print(f"surge: starting the stack in {tmp}", flush=True)
    await stack.start()
    report: dict[str, Any] = {}
    try:
        await seed_roster(stack.dsn)
        if a.pg_stats:
            await reset_pg_stats(stack.dsn)
        parts = embedded_parts(stack, tmp)
        print("baseline: produce → consume → insert, batched ...", flush=True)
        cpu_before = {name: cpu_seconds(pid) for name, pid in parts.items()}
        harness_before = time.process_time()  # this process alone (its children are the stack)
        baseline = await run_baseline(stack.bootstrap, stack.dsn, a.baseline_messages)
        baseline["cpu_s"] = {name: round(cpu_seconds(pid) - cpu_before[name], 2) for name, pid in parts.items()}
        baseline["cpu_s"]["harness"] = round(time.process_time() - harness_before, 2)
        baseline["cpu_ms_per_message"] = round(1000 * sum(baseline["cpu_s"].values()) / baseline["messages"], 4)
        print(f"  {baseline['per_s']:.0f} msg/s, {baseline['cpu_ms_per_message']:.3f} ms CPU each", flush=True)
        print("http floor: signed webhooks to an app that only checks and parses them ...", flush=True)
        floor = await http_floor()
        print(f"  {floor['per_s']:.0f} req/s, {floor['cpu_ms_per_request']:.3f} ms CPU each", flush=True)

        col = Collector(stack.bootstrap)
        stop = asyncio.Event()
        t0 = time.time()
        sampler = Sampler(stack, stack.dsn, stack.bootstrap)
        col_task = asyncio.create_task(col.run(stop))
        smp_task = asyncio.create_task(sampler.run(stop, t0))
        tz = daytime_zone()
        total = a.ramp_s + a.hold_s
        print(f"surge: ramp to {a.peak:.0f} returns/s over {a.ramp_s:.0f}s, hold {a.hold_s:.0f}s (customers in {tz})")
        load = Load(a, tmp, tz, col, sampler)
        if a.pg_stats:  # count the surge's statements alone (not the baseline's)
            await reset_pg_stats(stack.dsn)
        gen = await load.start("records.jsonl", a.peak, a.ramp_s, a.hold_s, start_fraction=0.1)
        sampler.extra.update(parts)  # the embedded PostgreSQL and broker: their CPU is the stack's
        cpu0 = dict(sampler.cpu_s)
        others0 = cpu_by_pid()
        lag0 = await loop_lag_buckets(settings)
        spies = []
        for name in filter(None, a.profile.split(",")):
            pid = stack.children[name].proc.pid  # type: ignore[union-attr]
            spies.append(
                await asyncio.create_subprocess_exec(
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--subprocesses",  # every worker of a multi-worker service
                    "--gil",  # only what holds the GIL: Python's own CPU, not threads waiting
                    *(["--native"] if os.environ.get("BENCH_PYSPY_NATIVE") else []),
                    "-p",
                    str(pid),
                    "-o",
                    str(tmp / f"profile-{name}.txt"),
                    "-f",
                    "raw",
                    "-d",
                    str(int(max(5, a.ramp_s + a.hold_s))),
                    "-r",
                    "50",
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
            )
        records, progress, gsum, t_gen_end = await load.finish(gen, total)
        await drain(records, col, sampler, a.drain_timeout_s)
        await asyncio.sleep(1.5)  # a last sample after the drain
        for spy in spies:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(spy.wait(), 30)
        if spies:
            print(f"profiles (py-spy raw) in {tmp}")
        sampler.cpu_used = {k: round(v - cpu0.get(k, 0.0), 1) for k, v in sampler.cpu_s.items()}
        # CPU used meanwhile by processes that are not the stack, the generator or this harness
        # (another job on a shared machine makes every figure worse: this says how much there was)
        ours = {os.getpid()}
        for pid in [*(c.proc.pid for c in stack.children.values() if c.proc), *sampler.extra.values()]:
            with contextlib.suppress(psutil.Error):
                ours |= {pid, *(x.pid for x in psutil.Process(pid).children(recursive=True))}
        others1 = cpu_by_pid()
        sampler.cpu_used["other_processes"] = round(
            sum(v - others0.get(pid, 0.0) for pid, v in others1.items() if pid not in ours), 1
        )
        hops = await sampler.committed_total(sampler.consumers, sampler.ends_c)
        loop_lag = lag_quantiles(lag0, await loop_lag_buckets(settings))
        done, lat = lifecycles(records, col)
        report = build_report(
            a, baseline, floor, gsum, progress, records, done, lat, col, sampler, hops, t0, t_gen_end, tz
        )
        report["summary"]["event_loop_lag"] = loop_lag
        if a.pg_stats:
            report["pg_statements"] = stats = await top_statements(stack.dsn)
            done_n = report["summary"]["lifecycles_complete"] or 1
            report["summary"]["per_lifecycle"] |= {
                "pg_statements": round(stats["statements"] / done_n, 1),
                "pg_commits": round((stats["commits"] or 0) / done_n, 1),
            }
        if a.share_s > 0:
            capacity = report["summary"][f"lifecycles_per_s_best_{best_span(a)}s"]
            if a.pg_stats:  # the steady phase's statements apart from the surge's
                await reset_pg_stats(stack.dsn)
            report["summary"]["at_share_of_capacity"] = await at_share_of_capacity(a, load, capacity, t0)
            if a.pg_stats:
                report["pg_statements_at_share"] = await top_statements(stack.dsn)
        stop.set()
        await asyncio.gather(col_task, smp_task)
        await sampler.close()
    finally:
        await stack.stop()
        if not (a.keep_data or a.profile):
            shutil.rmtree(tmp, ignore_errors=True)  # ~0.5 GB a run: `make bench` in a loop filled /tmp
    write_outputs(report, Path(a.out))
    print(json.dumps(report["summary"], indent=2))
    print(f"wrote {a.out} and {Path(a.out).with_suffix('.png')}")


def write_outputs(report: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    plot(report, out.with_suffix(".png"))


def build_report(
    a: argparse.Namespace,
    baseline: dict[str, Any],
    floor: dict[str, Any],
    gsum: dict[str, Any],
    progress: list[dict[str, Any]],
    records: list[dict[str, Any]],
    done: list[dict[str, Any]],
    lat: dict[str, list[float]],
    col: Collector,
    sampler: Sampler,
    hops: int,
    t0: float,
    t_gen_end: float,
    tz: str,
) -> dict[str, Any]:
    sends = [r["t_send"] for r in records if "t_send" in r]
    first = min(sends) if sends else t0
    offered_s = gsum.get("offered_s") or 1.0
    accepted = sum(1 for r in records if r.get("status") == 202)
    last_done = max((d["t_done"] for d in done), default=first + offered_s)
    window = max(last_done, first + offered_s) - first
    durations = sorted(d["t_done"] - d["t_send"] for d in done)
    med = durations[len(durations) // 2] if durations else 0.0
    # per-second series (seconds since the first webhook)
    n = int(window) + 2
    acc_s, done_s = [0] * n, [0] * n
    for r in records:
        if r.get("status") == 202 and "t_ack" in r:
            acc_s[min(n - 1, int(r["t_ack"] - first))] += 1
    for d in done:
        done_s[min(n - 1, int(d["t_done"] - first))] += 1
    lat_series: dict[str, list[float | None]] = {}
    by_sec: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        rid = r.get("return_id")
        if "t_ack" in r:
            by_sec["webhook_ack"][int(r["t_send"] - first)].append(r["t_ack"] - r["t_send"])
        if rid and rid in col.sms:
            by_sec["request_to_first_sms"][int(r["t_send"] - first)].append(col.sms[rid] - r["t_send"])
        if rid and r["kind"] == "return_and_refund" and rid in col.refund and "t_scan_ack" in r:
            s = max(r["t_scan_ack"], r["t_ack"])
            by_sec["moving_scan_to_refund_issued"][int(s - first)].append(col.refund[rid] - s)
        ver = col.verified.get(rid or "", [])
        if "lines" in r and len(ver) >= r["lines"]:
            by_sec["receipt_to_dual_check_verified"][int(r["t_receipt_ack"] - first)].append(
                max(ver) - r["t_receipt_ack"]
            )
    for k, secs in by_sec.items():
        lat_series[k] = [_ms(pct(secs[i], 95)) if secs.get(i) else None for i in range(n)]
    span = best_span(a)  # sustained: the best rolling window as long as the hold phase
    best = max((sum(done_s[i : i + span]) for i in range(max(1, n - span + 1))), default=0)
    hops_per_s = hops / window if window > 0 else 0.0
    eff = hops_per_s / baseline["per_s"] if baseline.get("per_s") else None
    by_kind: dict[str, int] = defaultdict(int)
    for d in done:
        by_kind[d["kind"]] += 1
    cpu_total = sum(v for k, v in sampler.cpu_used.items() if k != "other_processes")
    n_done = max(1, len(done))
    per_lifecycle = {
        "cpu_ms": round(1000 * cpu_total / n_done, 2),
        "http_requests": round(gsum.get("http_requests", 0) / n_done, 2),
        "message_hops": round(hops / n_done, 2),
    }
    cores = len(os.sched_getaffinity(0))  # --cores pins the run to fewer than the machine has
    floor_ms = (
        per_lifecycle["http_requests"] * floor["cpu_ms_per_request"]
        + per_lifecycle["message_hops"] * baseline["cpu_ms_per_message"]
    )
    # issue 17's first target: CPU per lifecycle at overload ≤ 3 times the plumbing floor of the same run
    per_lifecycle["floor_cpu_ms"] = round(floor_ms, 2)
    per_lifecycle["times_floor"] = round(per_lifecycle["cpu_ms"] / floor_ms, 2) if floor_ms > 0 and done else None
    ceilings = {
        # what the CPU measured per lifecycle leaves room for on this machine's cores
        "at_measured_cpu": round(cores * 1000 / per_lifecycle["cpu_ms"], 1) if done else None,
        # if the services cost only what a bare signed webhook and a bare message hop cost (bench.floor)
        "plumbing_floor": round(
            ceiling(
                cores,
                per_lifecycle["http_requests"],
                floor["cpu_ms_per_request"],
                per_lifecycle["message_hops"],
                baseline["cpu_ms_per_message"],
            ),
            1,
        )
        if done
        else None,
    }
    summary = {
        "returns_started": len(records),
        "webhooks_accepted": accepted,
        "accepted_webhooks_per_s": round(accepted / offered_s, 1),
        "peak_offered_returns_per_s": a.peak,
        "lifecycles_complete": len(done),
        "lifecycles_complete_by_kind": dict(by_kind),
        "lifecycles_incomplete": sum(1 for r in records if r.get("return_id")) - len(done),
        "lifecycles_per_s_overall": round(len(done) / window, 1) if window else 0,
        f"lifecycles_per_s_best_{span}s": round(best / span, 1),
        "median_lifecycle_s": round(med, 2),
        "latency": {k: summary_ms(v) for k, v in lat.items()},
        "message_hops": hops,
        "hops_per_s": round(hops_per_s, 1),
        "baseline_msgs_per_s": round(baseline["per_s"], 1),
        "efficiency": round(eff, 3) if eff is not None else None,
        "peak_rss_mb": {k: round(v, 1) for k, v in sampler.peak_rss.items()},
        "cpu_seconds_during_surge": sampler.cpu_used,
        "per_lifecycle": per_lifecycle,
        "ceiling_lifecycles_per_s": ceilings,
        "http_floor": floor,
        "baseline_cpu_ms_per_message": baseline["cpu_ms_per_message"],
        "max_outbox_backlog": max((sum(s.get("outbox_backlog", {}).values()) for s in sampler.samples), default=0),
        "max_consumer_lag": max((sum(s.get("consumer_lag", {}).values()) for s in sampler.samples), default=0),
        # each group's lag when the load stopped: a stage that falls behind at capacity shows here
        "consumer_lag_by_group_at_load_end": next(
            (s.get("consumer_lag", {}) for s in reversed(sampler.samples) if s["t"] <= t_gen_end - t0), {}
        ),
        "window_s": round(window, 1),
        "webhook_client_queue_p50_ms": round(gsum.get("webhook_client_queue_p50_ms", 0.0), 1),
        "webhook_client_queue_p99_ms": round(gsum.get("webhook_client_queue_p99_ms", 0.0), 1),
        "generator_errors": gsum.get("errors", {}),
    }
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} used), "
        f"{platform.system()}, "
        f"Python {platform.python_version()}",
        "command": " ".join(sys.argv),
        "config": vars(a),
        "customer_timezone": tz,
        "definitions": {
            "complete": "refund issued (not exchange) or replacement delivered (exchange) + first SMS sent + "
            "every line dual-check verified (return_and_refund, exchange; an exchange's replacement lines too); "
            "completion time = latest of those event times",
            "message_hops": "messages consumed by all consumer groups (sum of committed offsets)",
            "efficiency": "hops/s over the surge window (first webhook → last completion) ÷ baseline msg/s",
            "lifecycles_per_s_best_Ns": "completions in the best rolling window of N = min(hold, 60) seconds",
            "per_lifecycle": "CPU seconds of every process of the stack and the load generator, HTTP requests "
            "sent and message hops, each divided by the lifecycles completed",
            "ceiling_lifecycles_per_s": "cores ÷ CPU per lifecycle: as measured, and at the plumbing floor "
            "(HTTP requests * a bare signed webhook's CPU + hops * a bare baseline hop's CPU; bench.floor)",
        },
        "summary": summary,
        "baseline": baseline,
        "generator": gsum,
        "events_consumed": dict(col.counts),
        "series": {
            "t_s": list(range(n)),
            "accepted_webhooks": acc_s,
            "lifecycles_complete": done_s,
            "offered_rate": [[round(p["t"] - first, 2), p["offered_rate"]] for p in progress],
            "p95_latency_ms": lat_series,
        },
        "samples": [{**s, "t": round(s["t"] - (first - t0), 2)} for s in sampler.samples],
    }


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = report["series"]
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(10, 10), sharex=True)
    if s["offered_rate"]:
        xs, ys = zip(*s["offered_rate"], strict=False)
        ax1.plot(xs, ys, "k--", label="offered returns/s")
    for key, label in (("accepted_webhooks", "accepted webhooks/s"), ("lifecycles_complete", "lifecycles complete/s")):
        raw = s[key]
        smooth = [sum(raw[max(0, i - 2) : i + 3]) / len(raw[max(0, i - 2) : i + 3]) for i in range(len(raw))]
        (line,) = ax1.plot(s["t_s"], smooth, label=f"{label} (5 s mean)")
        ax1.plot(s["t_s"], raw, color=line.get_color(), alpha=0.25, linewidth=0.8)
    ax1.set_ylabel("per second")
    ax1.legend(loc="upper left")
    ax1.set_title(f"returnflow surge — {report['machine']}")
    for k, v in s["p95_latency_ms"].items():
        ax2.plot(s["t_s"][: len(v)], [x if x is not None else float("nan") for x in v], label=f"p95 {k}")
    ax2.set_yscale("log")
    ax2.set_ylabel("ms (by start second)")
    ax2.legend(loc="upper left", fontsize=8)
    ts = [x["t"] for x in report["samples"]]
    ax3.plot(ts, [sum(x.get("outbox_backlog", {}).values()) for x in report["samples"]], label="outbox backlog")
    ax3.plot(
        ts, [sum(x.get("consumer_lag", {}).values()) for x in report["samples"]], label="consumer lag (all groups)"
    )
    ax3.set_ylabel("messages")
    ax3.set_xlabel("seconds since the first webhook")
    ax3.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    asyncio.run(main())
