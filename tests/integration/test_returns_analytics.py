"""Reports for the after-sales lead, from real events on the real broker, over HTTP and the CLI."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from datetime import UTC, datetime, timedelta

import httpx

from contracts.events import (
    ClawbackFlagged,
    RefundDecided,
    RefundEscalated,
    RefundIssued,
    SmsFailed,
    SmsSent,
    SmsSuppressed,
)
from services.returns import SPEC
from tests.idle import wait_idle
from tests.integration.test_returns_timeline import publish
from tests.kafkautil import wait_for
from tests.readers import READ, READER_TOKEN
from tests.webhooks import return_body, signed


async def cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run the CLI without blocking this event loop (the service under test runs in it)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "apphost.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_reports_over_http_and_cli(settings, service_runner, tmp_path):
    async with service_runner(SPEC, settings) as svc, httpx.AsyncClient(base_url=svc.base_url, headers=READ) as client:
        ids = []
        for reason in ("damaged", "damaged", "size_too_small"):
            body = return_body(lines=[{"sku": "S", "qty": 1, "unit_price": 1000, "reason": reason}], paid_total=1000)
            raw, h = signed(body)
            ids.append(
                uuid.UUID(
                    (await client.post("/v1/webhooks/generic/returns", content=raw, headers=h)).json()["return_id"]
                )
            )
        now = datetime.now(UTC)
        common = {"correlation_id": "c", "currency": "CNY"}
        events = [
            RefundIssued(
                occurred_at=now + timedelta(hours=2),
                return_id=ids[0],
                refund_id="r0",
                amount=1000,
                basis="early_scan",
                gateway_reference="g0",
                **common,
            ),
            RefundIssued(
                occurred_at=now + timedelta(hours=30),
                return_id=ids[1],
                refund_id="r1",
                amount=1000,
                basis="warehouse_receipt",
                gateway_reference="g1",
                **common,
            ),
            RefundDecided(
                occurred_at=now,
                return_id=ids[2],
                decision="refund",
                amount=1000,
                basis="agent_authority",
                actor_id="agent-7",
                actor_role="agent",
                **common,
            ),
            RefundEscalated(
                occurred_at=now,
                return_id=ids[2],
                amount=9000,
                required_role="supervisor",
                requested_by="agent-7",
                reason="above authority",
                **common,
            ),
            ClawbackFlagged(
                occurred_at=now, return_id=ids[0], amount=1000, receipt_id="rc", reason="missing", **common
            ),
            SmsSent(
                occurred_at=now,
                return_id=ids[0],
                correlation_id="c",
                step="received",
                phone_masked="+86***78",
                locale="zh-CN",
                provider="file",
                provider_message_id="m1",
            ),
            SmsFailed(
                occurred_at=now,
                return_id=ids[1],
                correlation_id="c",
                step="received",
                phone_masked="+86***78",
                locale="zh-CN",
                provider="file",
                error="invalid number",
            ),
            SmsSuppressed(
                occurred_at=now,
                return_id=ids[2],
                correlation_id="c",
                step="reminder",
                phone_masked="+86***78",
                locale="zh-CN",
                reason="opted_out",
            ),
        ]
        await publish(settings.kafka_bootstrap, events)

        async def report(name):
            return (await client.get(f"/v1/analytics/{name}")).json()

        async def all_in():
            return (await report("sms"))["rows"][0]["sent"] == 1 and (await report("clawbacks"))["rows"][0][
                "clawbacks_flagged"
            ] == 1

        await wait_for(all_in)
        await wait_idle(svc)  # and every other topic read too: a gathering consumer reads topics in separate batches
        reasons = await report("reasons")
        damaged = next(r for r in reasons["rows"] if r["reason"] == "damaged")
        assert damaged["count"] == 2 and abs(damaged["share"] - 2 / 3) < 0.001
        cycle = {r["basis"]: r for r in (await report("cycle-times"))["rows"]}
        assert 1.9 * 3600 < cycle["early_scan"]["p50_s"] < 2.1 * 3600
        assert cycle["warehouse_receipt"]["p50_s"] > 29 * 3600
        assert (await report("early-refunds"))["rows"][0]["early_share"] == 0.5
        authority = (await report("authority"))["rows"]
        agent = next(r for r in authority if r["actor"] == "agent-7" and r["role"] == "agent")
        assert agent["decisions"] == 1 and agent["amount"] == 1000
        assert sum(r["escalations"] for r in authority) == 1
        assert (await report("clawbacks"))["rows"][0]["clawback_rate"] == 1.0
        sms = (await report("sms"))["rows"][0]
        assert sms["delivery_rate"] == 0.5 and sms["opted_out"] == 1
        csv = await client.get("/v1/analytics/reasons", params={"format": "csv"})
        assert csv.headers["content-type"].startswith("text/csv") and csv.text.startswith("month,reason,count,share")
        assert (await client.get("/v1/analytics/nope")).status_code == 404
        assert (await client.get("/v1/analytics/sms", params={"format": "xml"})).status_code == 422

        # a report is a read: no token, 401 (and the CLI says so); the reader's token from --token or the env
        anonymous = await client.get("/v1/analytics/sms", headers={"authorization": ""})
        assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RETURNFLOW_")}
        env["RETURNFLOW_RETURNS_PORT"] = str(svc.port)
        env["RETURNFLOW_CREDENTIALS"] = str(tmp_path / "no-credentials.json")
        code, stdout, stderr = await cli(env, "report", "authority")
        assert code != 0 and "no credential" in stderr, stderr
        code, stdout, stderr = await cli(env, "report", "authority", "--token", "not-a-reader")
        assert code != 0 and "reader's bearer token is required" in stderr, stderr
        code, stdout, stderr = await cli(env, "report", "authority", "--token", READER_TOKEN)
        assert code == 0 and "agent-7" in stdout, stderr
        png = tmp_path / "chart.png"
        env["RETURNFLOW_TOKEN"] = READER_TOKEN
        code, stdout, stderr = await cli(env, "report", "chart", "--out", str(png))
        assert code == 0, stderr
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
