"""Test fixtures: a real PostgreSQL (embedded, one server per session, a fresh database per test)
and a real Kafka-protocol broker (embedded Tansu, a fresh one per test), over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import uvicorn
from hypothesis import settings as hypothesis_settings
from pydantic import SecretStr

from apphost.embedded import EmbeddedKafka, EmbeddedPostgres, free_port
from returnflow.kafka import create_topics
from returnflow.service import ServiceSpec, create_app
from returnflow.settings import ServiceSettings, Settings
from tests.readers import read_tokens

# The machines are shared and noisy: a slow example is not a failure. Property tests still run
# their full number of examples.
hypothesis_settings.register_profile("returnflow", deadline=None)
hypothesis_settings.load_profile("returnflow")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedPostgres]:
    # Not under pytest's basetemp: pytest prunes old basetemps when other sessions start, which would
    # delete a running server's data directory under a concurrent run.
    root = Path(tempfile.mkdtemp(prefix="returnflow-test-pg-"))
    server = EmbeddedPostgres(root / "data")
    server.start()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def stack_root() -> Iterator[Path]:
    """A directory for a `returnflow up` stack's data, not under pytest's basetemp: embedded PostgreSQL's
    initdb runs as its own user and must reach it, and a pytest session starting beside this one sets
    /tmp/pytest-of-root back to 0700 (seen in the soak: initdb "Permission denied" in test_up)."""
    root = Path(tempfile.mkdtemp(prefix="returnflow-e2e-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def dsn(pg_server: EmbeddedPostgres) -> AsyncIterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_server.uri("postgres"))
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    yield pg_server.uri(name)
    admin = await asyncpg.connect(pg_server.uri("postgres"))
    with contextlib.suppress(Exception):
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await admin.close()


@pytest.fixture
def kafka(tmp_path: Path) -> Iterator[EmbeddedKafka]:
    broker = EmbeddedKafka(free_port(), log_path=tmp_path / "broker.log").start()
    yield broker
    broker.stop()


@pytest.fixture
async def bootstrap(kafka: EmbeddedKafka) -> str:
    await create_topics(kafka.bootstrap)
    return kafka.bootstrap


@pytest.fixture
def settings(dsn: str, bootstrap: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=SecretStr(dsn),
        kafka_bootstrap=bootstrap,
        data_dir=tmp_path / "data",
        webhook_secrets={
            "generic": [SecretStr("test-secret-old"), SecretStr("test-secret-new")],
            "shopify": [SecretStr("shopify-secret")],
            "carriers": [SecretStr("carrier-secret")],
        },
        consumer_backoff_base_s=0.01,
        consumer_backoff_max_s=0.05,
        outbox_poll_interval_s=0.2,
        outbox_broker_check_interval_s=0.5,
        log_format="console",
        kafka_session_timeout_ms=2000,
        kafka_heartbeat_interval_ms=400,
        dev_stack=True,  # the embedded servers the tests start: development fixtures are allowed
        read_tokens=read_tokens(),
    )


class RunningService:
    def __init__(self, app: Any, port: int) -> None:
        self.app = app
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"

    @property
    def runtime(self) -> Any:
        return self.app.state.runtime


@contextlib.asynccontextmanager
async def serve(
    spec: ServiceSpec[Any], settings: Settings, service_settings: ServiceSettings | None = None
) -> AsyncIterator[RunningService]:
    """Run a service in this event loop with uvicorn on a free loopback port (with its own settings, or
    its settings class's defaults)."""
    port = free_port()
    app = create_app(spec, settings, service_settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield RunningService(app, port)
    finally:
        server.should_exit = True
        await task


@pytest.fixture
def service_runner() -> Any:
    return serve
