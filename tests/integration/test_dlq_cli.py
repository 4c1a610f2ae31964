"""`returnflow dlq list` and `dlq replay` count what is really in a dead-letter topic on the embedded
broker, whose reported end offsets fall short when several producers write one partition at once; and
the CLI leaves quietly when its reader closes the pipe."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from aiokafka import AIOKafkaProducer

from tests.kafkautil import read_topic

DLQ = "returns.requested.dlq"


def dlq_row(stdout: str) -> list[str]:
    return next(line.split() for line in stdout.splitlines() if line.startswith(DLQ + " "))


def cli_env(settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETURNFLOW_")}
    env["RETURNFLOW_KAFKA_BOOTSTRAP"] = settings.kafka_bootstrap
    env["RETURNFLOW_KAFKA_SESSION_TIMEOUT_MS"] = "2000"
    env["RETURNFLOW_KAFKA_HEARTBEAT_INTERVAL_MS"] = "400"
    return env


async def produce_concurrently(bootstrap: str, producers: int, each: int) -> None:
    async def one(n: int) -> None:
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        await p.start()
        try:
            sent = [await p.send(DLQ, f'{{"n": "{n}-{i}"}}'.encode(), key=b"k", partition=0) for i in range(each)]
            await asyncio.gather(*sent)
        finally:
            await p.stop()

    await asyncio.gather(*(one(n) for n in range(producers)))


async def test_dlq_list_and_replay_count_every_readable_message(settings):
    await produce_concurrently(settings.kafka_bootstrap, producers=4, each=8)
    readable = len(await read_topic(settings.kafka_bootstrap, DLQ, expect=32))
    assert readable == 32
    env = cli_env(settings)

    listed = subprocess.run(
        [sys.executable, "-m", "apphost.cli", "dlq", "list"], env=env, capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr
    assert dlq_row(listed.stdout)[1:] == ["32", "0", "32"]

    replay = subprocess.run(
        [sys.executable, "-m", "apphost.cli", "dlq", "replay", DLQ], env=env, capture_output=True, text=True
    )
    assert replay.returncode == 0, replay.stderr
    assert "replayed 32 message(s)" in replay.stdout
    listed = subprocess.run(
        [sys.executable, "-m", "apphost.cli", "dlq", "list"], env=env, capture_output=True, text=True
    )
    assert dlq_row(listed.stdout)[1:] == ["32", "32", "0"]


async def test_output_to_a_closed_pipe_exits_quietly(settings):
    await produce_concurrently(settings.kafka_bootstrap, producers=2, each=400)  # more than a pipe buffers
    env = cli_env(settings)
    shell = f"{sys.executable} -m apphost.cli dlq show {DLQ} | head -1"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", shell], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("# offset 0")
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr
