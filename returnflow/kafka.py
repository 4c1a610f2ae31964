"""Kafka plumbing on FastStream/aiokafka: broker factory, topic creation, publish adapter."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context
from faststream.kafka import KafkaBroker
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from contracts.catalog import HEADER_CORRELATION_ID, all_topic_names
from returnflow.settings import Settings


def security_problem(settings: Settings) -> str | None:
    """Why the Kafka security settings cannot work, in one line (None: they can)."""
    if settings.kafka_security_protocol.startswith("SASL_") and not (
        settings.kafka_sasl_username and settings.kafka_sasl_password
    ):
        return (
            f"RETURNFLOW_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol} needs "
            "RETURNFLOW_KAFKA_SASL_USERNAME and RETURNFLOW_KAFKA_SASL_PASSWORD"
        )
    if settings.kafka_ssl_cafile is not None and not settings.kafka_ssl_cafile.is_file():
        return f"RETURNFLOW_KAFKA_SSL_CAFILE={settings.kafka_ssl_cafile} is not a file"
    return None


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments that authenticate an aiokafka client (producer, consumer, admin) as this
    process's Kafka user: nothing for PLAINTEXT (the embedded broker)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
        options["ssl_context"] = create_ssl_context(cafile=cafile)
    if protocol.startswith("SASL_"):
        password = settings.kafka_sasl_password
        options |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": password.get_secret_value() if password else None,
        }
    return options


def broker_security(settings: Settings) -> BaseSecurity | None:
    """The same credentials for FastStream's broker (its producer and every subscriber)."""
    options = client_options(settings)
    if not options:
        return None
    ssl_context = options.get("ssl_context")
    if "sasl_mechanism" not in options:
        return BaseSecurity(ssl_context=ssl_context, use_ssl=True)
    sasl = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}
    return sasl[options["sasl_mechanism"]](
        options["sasl_plain_username"],
        options["sasl_plain_password"],
        ssl_context=ssl_context,
        use_ssl=ssl_context is not None,
    )


def make_broker(settings: Settings, bootstrap: str, client_id: str) -> KafkaBroker:
    return KafkaBroker(
        bootstrap,
        security=broker_security(settings),
        client_id=client_id,
        acks="all" if settings.kafka_acks == "all" else int(settings.kafka_acks),
        enable_idempotence=settings.kafka_enable_idempotence,
        linger_ms=settings.kafka_linger_ms,
        max_batch_size=settings.kafka_max_batch_size,
        logger=None,  # FastStream's per-message log lines are a large cost; we log what matters
        graceful_timeout=15.0,
    )


def publisher_for(broker: KafkaBroker) -> Any:
    async def publish(topic: str, key: bytes | None, value: bytes, headers: dict[str, str]) -> Any:
        return await broker.publish(
            value,
            topic,
            key=key,
            headers=headers,
            correlation_id=headers.get(HEADER_CORRELATION_ID),
            no_confirm=True,
        )

    return publish


async def create_topics(
    bootstrap: str,
    topics: Iterable[tuple[str, int]] | None = None,
    *,
    replication_factor: int = 1,
    configs: Mapping[str, Mapping[str, str]] | None = None,
    options: Mapping[str, Any] | None = None,
) -> list[str]:
    """Create missing topics (idempotent). Returns the names created.

    `replication_factor` and per-topic `configs` (retention.ms, min.insync.replicas...) are for a real
    cluster (`returnflow topics create`); the embedded broker takes the defaults. `options`: the
    client's credentials (`client_options`)."""
    wanted = list(topics if topics is not None else all_topic_names())
    configs = configs or {}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000, **(options or {}))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(n, num_partitions=p, replication_factor=replication_factor, topic_configs=dict(configs.get(n, {})))
            for n, p in wanted
            if n not in existing
        ]
        created: list[str] = []
        for t in missing:  # one at a time: a racing creator makes only that topic fail
            try:
                await admin.create_topics([t])
                created.append(t.name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        await admin.close()


async def wait_for_broker(bootstrap: str, timeout_s: float = 20.0, options: Mapping[str, Any] | None = None) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    last: Exception | None = None
    while asyncio.get_running_loop().time() < deadline:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000, **(options or {}))
        try:
            await admin.start()
            await admin.list_topics()
            return
        except Exception as exc:
            last = exc
            await asyncio.sleep(0.2)
        finally:
            try:
                await admin.close()
            except Exception:
                pass
    raise TimeoutError(f"Kafka broker at {bootstrap} did not answer within {timeout_s}s: {last!r}")
