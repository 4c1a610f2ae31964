"""The outbox relay loses nothing: killed mid-batch and restarted, and when the broker lost its log."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

from apphost.embedded import EmbeddedKafka
from contracts.events import TrackingRegistered
from returnflow import db
from returnflow.kafka import create_topics, make_broker, publisher_for
from returnflow.outbox import Relay, enqueue
from returnflow.settings import Settings
from tests.kafkautil import read_topic, values, wait_for

SCHEMA = "relaytest"
TOPIC = "returns.tracking-registered"


async def setup(dsn: str, n: int):
    folder = Path(__file__).parent / "_nomigrations"
    await db.migrate(dsn, SCHEMA, db.migrations_for(SCHEMA, folder))
    pool = await db.create_pool(dsn, SCHEMA, "test", 1, 4)
    events = [
        TrackingRegistered(
            occurred_at=datetime.now(UTC), return_id=uuid.uuid4(), correlation_id=f"c{i}", tracking_no=f"T{i}"
        )
        for i in range(n)
    ]
    async with pool.acquire() as conn, conn.transaction():
        await enqueue(conn, events)
    return pool, {str(e.event_id) for e in events}


def relay(pool, dsn: str, bootstrap: str, broker) -> Relay:
    return Relay(
        pool=pool,
        dsn=dsn,
        schema=SCHEMA,
        publish=publisher_for(broker),
        bootstrap=bootstrap,
        batch_size=200,
        poll_interval_s=0.1,
        broker_check_interval_s=0.2,
        ensure_topics=lambda: create_topics(bootstrap),
    )


async def test_relay_killed_mid_batch_then_restarted_publishes_everything(dsn, bootstrap):
    pool, ids = await setup(dsn, 3000)
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "relay_proc.py"), dsn, bootstrap, SCHEMA, "200"],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    try:
        # kill -9 as soon as the first rows are marked published: a batch is in flight at that moment
        await wait_for(
            lambda: pool.fetchval("SELECT count(*) > 0 FROM outbox WHERE published_at IS NOT NULL"),
            timeout_s=30,
            interval=0.005,
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    published_before = await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL")
    assert published_before < 3000, "the relay finished before it was killed; the test proves nothing"
    broker = make_broker(Settings(), bootstrap, "t")
    await broker.connect()
    r = relay(pool, dsn, bootstrap, broker)
    task = asyncio.create_task(r.run())
    await wait_for(lambda: pool.fetchval("SELECT count(*) = 0 FROM outbox WHERE published_at IS NULL"), timeout_s=30)
    records = await read_topic(bootstrap, TOPIC, expect=3000)
    assert {v["event_id"] for v in values(records)} == ids  # none lost (a few may be there twice)
    await r.stop()
    await task
    await broker.stop()
    await pool.close()


async def test_broker_that_lost_its_log_gets_everything_again(dsn, tmp_path):
    kafka = EmbeddedKafka(port=_free(), log_path=tmp_path / "b.log").start()
    pool, ids = await setup(dsn, 50)
    try:
        await create_topics(kafka.bootstrap)
        broker = make_broker(Settings(), kafka.bootstrap, "t")
        await broker.connect()
        r = relay(pool, dsn, kafka.bootstrap, broker)
        assert await r.drain() == 50
        assert len(await read_topic(kafka.bootstrap, TOPIC, expect=50)) == 50
        await broker.stop()
        # the embedded broker is memory-only: restart it on the same port and it is empty
        kafka.stop()
        kafka.start()  # returns once the broker listens
        broker = make_broker(Settings(), kafka.bootstrap, "t")
        await broker.connect()
        r = relay(pool, dsn, kafka.bootstrap, broker)
        assert await r.broker_lost_log()
        task = asyncio.create_task(r.run())
        records = await read_topic(kafka.bootstrap, TOPIC, expect=50, timeout_s=20)
        assert {v["event_id"] for v in values(records)} == ids
        assert not await r.broker_lost_log()
        await r.stop()
        await task
        await broker.stop()
    finally:
        await pool.close()
        kafka.stop()


def _free() -> int:
    from apphost.embedded import free_port

    return free_port()


async def test_housekeeping_forgets_old_event_ids_and_published_rows_only(dsn, bootstrap):
    pool, _ids = await setup(dsn, 3)
    await pool.execute(
        """UPDATE outbox SET created_at = now() - interval '200 hours'
           WHERE id IN ((SELECT min(id) FROM outbox), (SELECT max(id) FROM outbox))"""
    )
    await pool.execute("UPDATE outbox SET published_at = now() WHERE id < (SELECT max(id) FROM outbox)")
    await pool.execute(
        """INSERT INTO processed_events (consumer, event_id, processed_at)
           SELECT 'c', 'old-' || g, now() - interval '200 hours' FROM generate_series(1, 25) g
           UNION ALL SELECT 'c', 'new-' || g, now() - interval '100 hours' FROM generate_series(1, 5) g"""
    )
    broker = make_broker(Settings(), bootstrap, "t")
    r = Relay(pool=pool, dsn=dsn, schema=SCHEMA, publish=publisher_for(broker), bootstrap=bootstrap)
    assert await r.purge(chunk=10) == 26  # chunks of 10: 25 old ids, 1 old published row
    left = await pool.fetch("SELECT event_id FROM processed_events ORDER BY event_id")
    assert [x["event_id"] for x in left] == [f"new-{g}" for g in range(1, 6)]
    # an old row not yet published is kept, whatever its age; recent published rows are kept
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 2
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 1
    await pool.close()


async def test_a_broker_loss_found_by_one_relay_rewinds_the_consumers_of_the_other(dsn, bootstrap):
    """A service split in two processes has a relay in each, on one outbox: whichever finds that the broker
    lost its log re-publishes and moves the schema's broker epoch; the other sees the epoch move on its own
    broker check and sends its consumers back to the start (once)."""
    pool, _ = await setup(dsn, 0)
    rewound: list[str] = []

    async def rewind() -> None:
        rewound.append("consumers")

    broker = make_broker(Settings(), bootstrap, "t")
    finder = relay(pool, dsn, bootstrap, broker)
    other = Relay(pool=pool, dsn=dsn, schema=SCHEMA, publish=publisher_for(broker), bootstrap=bootstrap)
    other.on_broker_loss = rewind
    await other.check_broker()  # nothing lost, the epoch as it is now
    assert rewound == []
    await finder.republish_retained()
    await other.check_broker()
    assert rewound == ["consumers"]
    await other.check_broker()
    assert rewound == ["consumers"], "one loss, one rewind"
    await pool.close()
