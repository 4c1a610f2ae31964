"""Surge load generator: its own process, loopback only, bounded in count and time.

Replays a promotion-day surge at a rate that ramps linearly up to a peak and holds it. Each return
plays its whole life over keep-alive HTTP/1.1 connections (raw asyncio streams, so the client leaves
the CPU to the system under test):

  signed return webhook (60% return_and_refund, 30% refund_only filed by an agent, 10% exchange —
  after its receipt, the replacement shipped, checked and its outgoing parcel scanned delivered;
  1-3 lines; tracking_no set when goods come back) -> for parcels: signed carrier scans (picked_up,
  in_transit; 10% of parcels are scanned before their return webhook is sent, 10% get an `accepted`
  scan that happened earlier but arrives later, 15% get a scan delivered twice) -> a device receipt
  (by tracking number; retried while the warehouse has not yet heard of the return) -> one
  returns-team check per line (audit bearer token). 5% of webhooks are delivered a second time.

Writes one JSON line per return (wall-clock send/ack times; the harness joins them with the events
it consumes) to --out, and progress lines ("P {json}") to stdout every half second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from returnflow.signing import sign

RETURN_SECRET = b"dev-generic-secret"
CARRIER_SECRET = b"dev-carrier-secret"
DEVICE_TOKEN = "dev-device-token-dock-1"
AUDIT_TOKEN = "dev-audit-token-lin"
PARCEL_KINDS = ("return_and_refund", "exchange")


def kind_of(i: int) -> str:
    r = i % 10
    return "return_and_refund" if r < 6 else ("refund_only" if r < 9 else "exchange")


class Pool:
    """Keep-alive HTTP/1.1 connections to one loopback port, at most `size` at a time."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host, self.port, self.size = host, port, size
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.sem = asyncio.Semaphore(size)
        self.sent = 0  # requests written, resends included

    async def request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        status, payload, _t = await self.timed(method, path, body, headers)
        return status, payload

    async def timed(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, float]:
        """(status, body, wall-clock time the request was written: after waiting for a connection)."""
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Length: {len(body)}\r\n"
        raw = (head + "".join(f"{k}: {v}\r\n" for k, v in headers.items())).encode() + b"\r\n" + body
        async with self.sem:
            for attempt in (1, 2):
                reused = attempt == 1 and bool(self.idle)  # a retry always takes a new connection
                conn = self.idle.pop() if reused else await asyncio.open_connection(self.host, self.port)
                try:
                    t = time.time()
                    self.sent += 1
                    status, payload = await self._exchange(conn, raw)
                    return status, payload, t
                except (asyncio.IncompleteReadError, ConnectionError):
                    conn[1].close()
                    # the server closed an idle keep-alive connection: every request here is
                    # idempotent (delivery ids, scan ids, receipt and check ids), so send it again once,
                    # on a new connection (another idle one may have been closed as well)
                    if not reused or attempt == 2:
                        raise
                except BaseException:
                    conn[1].close()
                    raise
        raise AssertionError("unreachable")

    async def _exchange(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], raw: bytes) -> tuple[int, bytes]:
        reader, writer = conn
        writer.write(raw)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        payload = await reader.readexactly(length)
        self.idle.append(conn)
        return status, payload


class Gen:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.run = uuid.uuid4().hex[:8]
        self.returns = Pool(a.host, a.returns_port, a.connections)
        self.warehouse = Pool(a.host, a.warehouse_port, a.connections)
        self.audit = Pool(a.host, a.audit_port, a.connections)
        self.records: list[dict[str, Any]] = []
        self.counts: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.ack_lat: list[float] = []
        self.queue_wait: list[float] = []  # time a webhook waited for a free client connection
        self.started = 0
        self.deadline = 0.0
        self.rng = random.Random(a.seed)

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n

    def error(self, what: str, status: int | str) -> None:
        key = f"{what}:{status}"
        self.errors[key] = self.errors.get(key, 0) + 1

    # -- requests ----------------------------------------------------------------------------------
    def webhook(self, i: int, kind: str, tracking_no: str | None) -> bytes:
        n = 1 + i % 3
        lines: list[dict[str, Any]] = [
            {
                "sku": f"SKU-{(i * 3 + k) % 997}",
                "qty": 1 + (i + k) % 2,
                "unit_price": 990 + 100 * k,
                "reason": ["size_too_small", "damaged", "not_as_described"][k % 3],
            }
            for k in range(n)
        ]
        body: dict[str, Any] = {
            "platform_return_id": f"surge-{self.run}-{i}",
            "order_id": f"o-{self.run}-{i}",
            "payment_reference": f"pi_{self.run}_{i}",  # the order's PaymentIntent (the Stripe adapter)
            "shop_id": f"shop-{i % 20}",
            "kind": kind,
            "currency": "CNY",
            "paid_total": sum(x["qty"] * x["unit_price"] for x in lines),
            "lines": lines,
            "requested_at": datetime.now(UTC).isoformat(),
            "requested_by": {"type": "agent", "agent_id": "agent-amy"}
            if kind == "refund_only"
            else {"type": "customer"},
            "customer": {
                "id": f"c-{self.run}-{i}",
                "phone": f"+86139{i % 100000000:08d}",
                "locale": ["zh-CN", "en", "es"][i % 3],
                "timezone": self.a.timezone,
            },
        }
        if tracking_no:
            body["tracking_no"] = tracking_no
        return orjson.dumps(body)

    async def post_webhook(self, raw: bytes, delivery: str) -> tuple[int, bytes, float, float]:
        headers = {
            "Content-Type": "application/json",
            "X-Returnflow-Signature": sign(RETURN_SECRET, raw),
            "X-Returnflow-Delivery": delivery,
        }
        t_due = time.time()
        status, payload, t0 = await self.returns.timed("POST", "/v1/webhooks/generic/returns", raw, headers)
        self.queue_wait.append(t0 - t_due)
        return status, payload, t0, time.time()

    async def scan(self, tracking_no: str, code: str, at: datetime, twice: bool = False) -> tuple[int, float]:
        raw = orjson.dumps({"tracking_no": tracking_no, "scan_code": code, "scanned_at": at.isoformat()})
        status = 0
        for _ in range(2 if twice else 1):
            headers = {"Content-Type": "application/json", "X-Returnflow-Signature": sign(CARRIER_SECRET, raw)}
            status, _payload = await self.warehouse.request("POST", "/v1/webhooks/carriers/sf/scans", raw, headers)
            self.count("scans")
            if status == 200:
                self.count("scan_duplicates_acked")
            elif status != 202:
                self.error("scan", status)
        return status, time.time()

    # -- one return's life ---------------------------------------------------------------------------
    async def lifecycle(self, i: int) -> None:
        kind = kind_of(i)
        rec: dict[str, Any] = {"i": i, "kind": kind}
        self.records.append(rec)
        parcel = kind in PARCEL_KINDS
        tracking_no = f"SF{self.run}{i:07d}" if parcel else None
        scan_first = parcel and self.rng.random() < 0.10
        base = datetime.now(UTC) - timedelta(minutes=30)
        try:
            if scan_first and tracking_no:  # the courier is faster than the marketplace
                await self.scan(tracking_no, "picked_up", base + timedelta(minutes=1))
                rec["t_scan_ack"] = time.time()
                rec["scan_before_return"] = True
            raw = self.webhook(i, kind, tracking_no)
            status, payload, t0, t1 = await self.post_webhook(raw, f"{self.run}-{i}")
            rec.update(t_send=t0, t_ack=t1, status=status)
            self.ack_lat.append(t1 - t0)
            if status != 202:
                self.error("webhook", status)
                return
            self.count("webhooks_accepted")
            rec["return_id"] = orjson.loads(payload)["return_id"]
            if self.rng.random() < 0.05:
                await asyncio.sleep(0.2)
                st, _p, _a, _b = await self.post_webhook(raw, f"{self.run}-{i}")
                self.count("webhook_duplicates_sent")
                if st != 200:
                    self.error("webhook_duplicate", st)
            if not parcel or not tracking_no:
                return
            await asyncio.sleep(self.a.scan_delay_s * (0.5 + self.rng.random()))
            if not scan_first:
                st, t = await self.scan(tracking_no, "picked_up", base + timedelta(minutes=1), self.rng.random() < 0.15)
                rec["t_scan_ack"] = t
            if self.rng.random() < 0.10:  # an earlier scan arriving late
                await self.scan(tracking_no, "accepted", base)
            await self.scan(tracking_no, "in_transit", base + timedelta(minutes=5))
            await asyncio.sleep(self.a.receipt_delay_s * (0.5 + self.rng.random()))
            await self.receipt(i, rec, raw, tracking_no)
            if kind == "exchange" and "t_receipt_ack" in rec:
                await self.replacement(i, rec, raw)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            self.error("client", type(exc).__name__)

    async def receipt(self, i: int, rec: dict[str, Any], webhook_raw: bytes, tracking_no: str) -> None:
        lines = orjson.loads(webhook_raw)["lines"]
        disposition = "restock" if i % 2 == 0 else "destroy"
        body = orjson.dumps(
            {
                "receipt_id": f"dock-1-{self.run}-{i}",
                "tracking_no": tracking_no,
                "inspector_id": "insp-wang",
                "lines": [
                    {"sku": x["sku"], "qty_received": x["qty"], "condition": "as_described", "disposition": disposition}
                    for x in lines
                ],
            }
        )
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {DEVICE_TOKEN}"}
        for _attempt in range(50):
            t0 = time.time()
            status, _payload = await self.warehouse.request("POST", "/v1/warehouse/receipts", body, headers)
            if status != 404:  # 404: the warehouse has not consumed the return request yet
                break
            self.count("receipt_retries")
            await asyncio.sleep(0.2)
        if status not in (200, 201):
            self.error("receipt", status)
            return
        self.count("receipts")
        rec.update(t_receipt_send=t0, t_receipt_ack=time.time(), lines=len(lines))
        for k, x in enumerate(lines):
            check = orjson.dumps(
                {
                    "check_id": f"chk-{self.run}-{i}-{k}",
                    "return_id": rec["return_id"],
                    "sku": x["sku"],
                    "movement": disposition,
                    "quantity": x["qty"],
                }
            )
            h = {"Content-Type": "application/json", "Authorization": f"Bearer {AUDIT_TOKEN}"}
            st, _p = await self.audit.request("POST", "/v1/inventory/checks", check, h)
            self.count("checks")
            if st not in (200, 201, 202):
                self.error("check", st)
        rec["t_checks_ack"] = time.time()

    async def replacement(self, i: int, rec: dict[str, Any], webhook_raw: bytes) -> None:
        """An exchange's replacement: shipped (the warehouse attests each SKU leaving stock, the returns
        team checks it), then its outgoing parcel scanned picked up and delivered."""
        lines = [{"sku": x["sku"], "qty": x["qty"]} for x in orjson.loads(webhook_raw)["lines"]]
        outgoing = f"SFO{self.run}{i:07d}"
        body = orjson.dumps(
            {
                "shipment_id": f"pack-{self.run}-{i}",
                "return_id": rec["return_id"],
                "carrier": "sf",
                "tracking_no": outgoing,
                "packed_by": "packer-li",
                "lines": lines,
            }
        )
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {DEVICE_TOKEN}"}
        status, _payload = await self.warehouse.request("POST", "/v1/warehouse/replacements", body, headers)
        if status not in (200, 201):
            self.error("replacement", status)
            return
        self.count("replacements")
        rec.update(t_shipped_ack=time.time(), replacement_lines=len(lines))
        for k, x in enumerate(lines):
            check = orjson.dumps(
                {
                    "check_id": f"chk-out-{self.run}-{i}-{k}",
                    "return_id": rec["return_id"],
                    "sku": x["sku"],
                    "movement": "replacement_out",
                    "quantity": x["qty"],
                }
            )
            h = {"Content-Type": "application/json", "Authorization": f"Bearer {AUDIT_TOKEN}"}
            st, _p = await self.audit.request("POST", "/v1/inventory/checks", check, h)
            self.count("checks")
            if st not in (200, 201, 202):
                self.error("check", st)
        await asyncio.sleep(self.a.scan_delay_s * (0.5 + self.rng.random()))
        now = datetime.now(UTC)
        await self.scan(outgoing, "picked_up", now)
        await asyncio.sleep(self.a.scan_delay_s * (0.5 + self.rng.random()))
        await self.scan(outgoing, "delivered", now + timedelta(hours=20))
        rec["t_delivered_scan_ack"] = time.time()

    # -- the surge -------------------------------------------------------------------------------------
    def target(self, elapsed: float) -> float:
        """Returns that should have started after `elapsed` seconds (∫ rate dt)."""
        a = self.a
        lo = a.peak * a.start_fraction
        r = min(elapsed, a.ramp_s)
        n = lo * r + (a.peak - lo) * r * r / (2 * a.ramp_s)
        if elapsed > a.ramp_s:
            n += a.peak * (elapsed - a.ramp_s)
        return n

    async def progress(self, t_start: float) -> None:
        while True:
            await asyncio.sleep(0.5)
            el = time.monotonic() - t_start
            rate = self.a.peak * min(1.0, self.a.start_fraction + (1 - self.a.start_fraction) * el / self.a.ramp_s)
            if el > self.a.ramp_s + self.a.hold_s:
                rate = 0.0
            line = {"t": time.time(), "elapsed": el, "started": self.started, "offered_rate": rate, **self.counts}
            print("P " + json.dumps(line), flush=True)

    async def main(self) -> dict[str, Any]:
        a = self.a
        total_s = a.ramp_s + a.hold_s
        t_start = time.monotonic()
        self.deadline = t_start + a.max_seconds
        prog = asyncio.create_task(self.progress(t_start))
        tasks: set[asyncio.Task[None]] = set()
        behind = 0
        while self.started < a.max_returns:
            el = time.monotonic() - t_start
            if el >= total_s or time.monotonic() > self.deadline:
                break
            due = min(int(self.target(el)), a.max_returns)
            while self.started < due:
                if len(tasks) >= a.max_inflight:
                    behind = due - self.started
                    break
                t = asyncio.create_task(self.lifecycle(self.started))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                self.started += 1
            await asyncio.sleep(0.005)
        offered_s = time.monotonic() - t_start
        if tasks:
            await asyncio.wait(tasks, timeout=max(1.0, self.deadline - time.monotonic()))
        prog.cancel()
        lat = sorted(self.ack_lat)
        return {
            "run": self.run,
            "offered_s": offered_s,
            "elapsed_s": time.monotonic() - t_start,
            "returns_started": self.started,
            "unfinished_tasks": sum(1 for t in tasks if not t.done()),
            "behind_at_end": behind,
            "counts": self.counts,
            "http_requests": self.returns.sent + self.warehouse.sent + self.audit.sent,
            "errors": self.errors,
            "ack_p50_ms": pct(lat, 50) * 1000,
            "ack_p99_ms": pct(lat, 99) * 1000,
            "webhook_client_queue_p50_ms": pct(sorted(self.queue_wait), 50) * 1000,
            "webhook_client_queue_p99_ms": pct(sorted(self.queue_wait), 99) * 1000,
        }


def pct(sorted_vals: list[float], p: float) -> float:
    if not sorted_vals:
        return 0.0
    return sorted_vals[min(len(sorted_vals) - 1, int(p / 100 * len(sorted_vals)))]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--returns-port", type=int, required=True)
    ap.add_argument("--warehouse-port", type=int, required=True)
    ap.add_argument("--audit-port", type=int, required=True)
    ap.add_argument("--peak", type=float, default=100.0, help="returns started per second at the peak")
    ap.add_argument("--start-fraction", type=float, default=0.1, help="rate at the start, as a fraction of peak")
    ap.add_argument("--ramp-s", type=float, default=20.0)
    ap.add_argument("--hold-s", type=float, default=20.0, help="seconds at the peak")
    ap.add_argument("--max-returns", type=int, default=100_000)
    ap.add_argument("--max-inflight", type=int, default=5000)
    ap.add_argument("--max-seconds", type=float, default=300.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--scan-delay-s", type=float, default=0.3)
    ap.add_argument("--receipt-delay-s", type=float, default=0.5)
    ap.add_argument("--timezone", default="Europe/London")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if not a.host.startswith("127.") and a.host != "localhost":
        sys.exit("surgegen: loopback targets only")
    return a


async def amain() -> None:
    a = parse()
    gen = Gen(a)
    summary = await gen.main()
    with open(a.out, "wb") as f:
        for r in gen.records:
            f.write(orjson.dumps(r) + b"\n")
    print("S " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    asyncio.run(amain())
