"""The deploy one-shot commands against a real broker and a real PostgreSQL, as a container runs them:
`returnflow topics create` (compose's topic job) and `returnflow migrate` (compose job, k8s init container)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from aiokafka.admin import AIOKafkaAdminClient

from apphost.embedded import EmbeddedKafka, free_port
from apphost.registry import SERVICES
from contracts.catalog import all_topic_names


def returnflow(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RETURNFLOW_")}
    return subprocess.run(
        [sys.executable, "-m", "apphost.cli", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def partitions_on(bootstrap: str) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [n for n in await admin.list_topics() if not n.startswith("__")]
        described = await admin.describe_topics(names)
        return {t["topic"]: len(t["partitions"]) for t in described}
    finally:
        await admin.close()


def test_topics_create_makes_the_catalog_on_a_fresh_broker(kafka: EmbeddedKafka) -> None:
    catalog = dict(all_topic_names(with_dlq=True))
    first = returnflow("topics", "create", "--wait", "10", RETURNFLOW_KAFKA_BOOTSTRAP=kafka.bootstrap)
    assert first.returncode == 0, first.stderr
    assert f"{len(catalog)} created, 0 already there" in first.stdout
    assert asyncio.run(partitions_on(kafka.bootstrap)) == catalog
    again = returnflow("topics", "create", "--wait", "10", RETURNFLOW_KAFKA_BOOTSTRAP=kafka.bootstrap)
    assert again.returncode == 0 and f"0 created, {len(catalog)} already there" in again.stdout


def test_topics_create_without_a_broker_fails_in_one_line() -> None:
    proc = returnflow("topics", "create", "--wait", "1", RETURNFLOW_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}")
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("returnflow: topics create failed")


async def test_migrate_applies_every_service_once(dsn: str) -> None:
    first = returnflow("migrate", RETURNFLOW_DATABASE_URL=dsn)
    assert first.returncode == 0, first.stderr
    lines = dict(line.split(": ", 1) for line in first.stdout.splitlines())
    assert set(lines) == set(SERVICES) and all(v.endswith("applied") for v in lines.values())
    again = returnflow("migrate", "returns", RETURNFLOW_DATABASE_URL=dsn)
    assert again.returncode == 0 and again.stdout.strip() == "returns: up to date"
    unknown = returnflow("migrate", "nosuch", RETURNFLOW_DATABASE_URL=dsn)
    assert unknown.returncode == 1 and "unknown service 'nosuch'" in unknown.stderr
