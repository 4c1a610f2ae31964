"""The returnflow CLI against a real broker: topics, tail (masked), DLQ show and replay."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from contracts.events import Customer, RequestedBy, ReturnLine, ReturnRequested
from returnflow.outbox import event_record
from tests.kafkautil import headers, read_topic


def cli(settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETURNFLOW_")}
    env["RETURNFLOW_KAFKA_BOOTSTRAP"] = settings.kafka_bootstrap
    env["RETURNFLOW_KAFKA_SESSION_TIMEOUT_MS"] = "2000"
    env["RETURNFLOW_KAFKA_HEARTBEAT_INTERVAL_MS"] = "400"
    return subprocess.run(
        [sys.executable, "-m", "apphost.cli", *args], env=env, capture_output=True, text=True, timeout=60
    )


def requested(rid: uuid.UUID) -> ReturnRequested:
    return ReturnRequested(
        occurred_at=datetime.now(UTC),
        return_id=rid,
        correlation_id="c-ops",
        shop_id="s",
        platform="generic",
        platform_return_id="p",
        order_id="o",
        kind="refund_only",
        currency="CNY",
        paid_total=100,
        customer=Customer(id="c", phone="+8613812345678"),
        lines=[ReturnLine(sku="A", qty=1, unit_price=100, reason="x")],
        requested_by=RequestedBy(type="customer"),
        requested_at=datetime.now(UTC),
    )


async def test_tail_topics_dlq_and_commands(settings):
    bootstrap = settings.kafka_bootstrap
    rid, other = uuid.uuid4(), uuid.uuid4()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    for e in (requested(rid), requested(other)):
        r = event_record(e)
        await producer.send_and_wait(
            r.topic, r.value, key=r.key, headers=[(k, v.encode()) for k, v in r.headers.items()]
        )
    dlq_headers = [
        ("rf-dlq-original-topic", b"returns.requested"),
        ("rf-dlq-error-type", b"RuntimeError"),
        ("rf-dlq-error-message", b"boom"),
        ("rf-correlation-id", b"c-ops"),
    ]
    for i in range(3):
        await producer.send_and_wait(
            "returns.requested.dlq",
            event_record(requested(uuid.uuid4())).value,
            key=f"k{i}".encode(),
            headers=dlq_headers,
        )
    await producer.stop()

    out = cli(settings, "tail", "returns.requested", "--return-id", str(rid))
    assert out.returncode == 0, out.stderr
    assert str(rid) in out.stdout and str(other) not in out.stdout
    assert "+8613812345678" not in out.stdout and "rf-correlation-id" in out.stdout

    out = cli(settings, "topics")
    assert out.returncode == 0, out.stderr
    assert "returns.requested " in out.stdout and "refunds.commands" in out.stdout

    out = cli(settings, "dlq", "show", "returns.requested.dlq")
    assert out.returncode == 0 and out.stdout.count("RuntimeError: boom") == 3

    out = cli(settings, "dlq", "replay", "returns.requested.dlq")
    assert out.returncode == 0, out.stderr
    assert "replayed 3" in out.stdout
    replayed = [
        r for r in await read_topic(bootstrap, "returns.requested", expect=5) if "rf-replayed-from-dlq" in headers(r)
    ]
    assert len(replayed) == 3
    assert all("rf-dlq-error-type" not in headers(r) for r in replayed)
    # the DLQ still holds every message, and a second replay finds nothing pending
    assert len(await read_topic(bootstrap, "returns.requested.dlq", expect=3)) == 3
    out = cli(settings, "dlq", "replay", "returns.requested.dlq")
    assert "nothing to replay" in out.stdout
    out = cli(settings, "dlq", "list")
    assert "returns.requested.dlq" in out.stdout

    bad = cli(settings, "approve", "not-a-uuid", "--token", "t")
    assert (
        bad.returncode == 1 and bad.stderr.startswith("returnflow: not a return id") and "Traceback" not in bad.stderr
    )
    bad = cli(settings, "dlq", "show", "returns.requested")
    assert bad.returncode == 1 and "not a dead-letter topic" in bad.stderr


def test_unreachable_broker_is_one_line():
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETURNFLOW_")}
    env["RETURNFLOW_KAFKA_BOOTSTRAP"] = "127.0.0.1:1"
    out = subprocess.run(
        [sys.executable, "-m", "apphost.cli", "topics"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1
    assert out.stderr.strip().startswith("returnflow: cannot reach Kafka at 127.0.0.1:1")
    assert "Traceback" not in out.stderr
