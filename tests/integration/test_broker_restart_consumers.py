"""A running service whose broker restarts empty still applies what is written to the new log, even at
offsets below the positions its consumers held in the lost one."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import httpx
from pydantic import SecretStr

from apphost.embedded import EmbeddedKafka, free_port
from contracts.events import ParcelScanned, ScanCode
from returnflow.kafka import create_topics
from services.returns import SPEC
from tests.integration.test_returns_timeline import publish
from tests.kafkautil import wait_for
from tests.webhooks import return_body, signed


def scan(rid: uuid.UUID, n: int) -> ParcelScanned:
    now = datetime.now(UTC)
    return ParcelScanned(
        occurred_at=now,
        return_id=rid,
        correlation_id="c",
        scan_id=f"s-{rid}-{n}",
        tracking_no="T",
        carrier="sf",
        scan_code=ScanCode.in_transit,
        scanned_at=now,
        first_moving=n == 0,
    )


async def test_consumers_reread_a_restarted_broker(settings, service_runner, tmp_path):
    kafka = EmbeddedKafka(free_port(), log_path=tmp_path / "own-broker.log").start()
    try:
        await create_topics(kafka.bootstrap)
        own = settings.model_copy(
            update={
                "kafka_bootstrap": kafka.bootstrap,
                "database_url": SecretStr(settings.database_url.get_secret_value()),
            }
        )
        async with service_runner(SPEC, own) as svc, httpx.AsyncClient(base_url=svc.base_url) as client:
            ids = []
            for _ in range(20):
                raw, h = signed(return_body())
                ids.append(
                    uuid.UUID(
                        (await client.post("/v1/webhooks/generic/returns", content=raw, headers=h)).json()["return_id"]
                    )
                )
            await publish(kafka.bootstrap, [scan(rid, k) for rid in ids for k in range(3)])  # 60 scans: positions ~15
            pool = svc.runtime.pool
            await wait_for(lambda: pool.fetchval("SELECT count(*) = 60 FROM timeline WHERE type = 'parcel.scanned'"))
            await wait_for(lambda: pool.fetchval("SELECT count(*) = 0 FROM outbox WHERE published_at IS NULL"))

            kafka.stop()
            kafka.start()  # same port, empty log
            await create_topics(kafka.bootstrap)
            late = [scan(rid, 9) for rid in ids[:5]]  # land at offsets 0..1 of the new log
            await publish(kafka.bootstrap, late)
            await wait_for(
                lambda: pool.fetchval("SELECT count(*) = 65 FROM timeline WHERE type = 'parcel.scanned'"), timeout_s=30
            )
            assert await pool.fetchval("SELECT count(*) FROM timeline WHERE type = 'return.requested'") == 20
            await asyncio.sleep(0)
    finally:
        kafka.stop()
