"""Run one outbox relay in its own process (the test kills it with SIGKILL mid-batch)."""

from __future__ import annotations

import asyncio
import sys

from returnflow import db
from returnflow.kafka import make_broker, publisher_for
from returnflow.outbox import Relay
from returnflow.settings import Settings


async def main(dsn: str, bootstrap: str, schema: str, batch: int) -> None:
    pool = await db.create_pool(dsn, schema, "relay-test", 1, 2)
    broker = make_broker(Settings(), bootstrap, "relay-test")
    await broker.connect()
    relay = Relay(
        pool=pool,
        dsn=dsn,
        schema=schema,
        publish=publisher_for(broker),
        bootstrap=bootstrap,
        batch_size=batch,
        poll_interval_s=0.1,
    )
    await relay.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
