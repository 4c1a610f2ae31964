"""Ops commands of the `returnflow` CLI: the same against the embedded broker and a real cluster.

topics, tail, dlq list|show|replay, timeline, backlogs. People's decisions (approve|reject|grant) are in
apphost/decisions_cli.py: through the refunds HTTP API with the person's own token, never a Kafka
command the CLI would publish in someone's name.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from apphost.credentials import TOKEN_ENV, bearer, problem_text, resolve_token
from apphost.registry import base_url_for
from contracts.catalog import (
    CATALOG,
    DLQ_SUFFIX,
    HEADER_DLQ_ERROR_MESSAGE,
    HEADER_DLQ_ERROR_TYPE,
    HEADER_DLQ_TOPIC,
    HEADER_REPLAYED,
    TOPICS_BY_NAME,
)
from returnflow.kafka import client_options, security_problem
from returnflow.logging import _redact
from returnflow.settings import Settings

REPLAY_GROUP = "returnflow.dlq-replay"


class OpsError(Exception):
    """One clear line for the operator."""


def bootstrap_of(settings: Settings) -> str:
    return settings.kafka_bootstrap or f"{settings.host}:{settings.embedded_kafka_port}"


def kafka_of(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of the CLI's Kafka clients: the bootstrap and the operator's credentials
    (RETURNFLOW_KAFKA_SECURITY_PROTOCOL, _SASL_USERNAME, _SASL_PASSWORD: the ops user on a real cluster)."""
    if problem := security_problem(settings):
        raise OpsError(problem)
    return {"bootstrap_servers": bootstrap_of(settings), **client_options(settings)}


def _where(kafka: dict[str, Any]) -> str:
    return str(kafka["bootstrap_servers"])


def progress(done: int, total: int, what: str) -> None:
    if total <= 0 or (not sys.stderr.isatty() and done not in (total,) and done % 500):
        return
    width = 30
    filled = int(width * done / total) if total else width
    sys.stderr.write(f"\r{what} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


async def _admin(kafka: dict[str, Any]) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(**kafka, request_timeout_ms=5000)
    try:
        await asyncio.wait_for(admin.start(), 8)
    except Exception as exc:
        raise OpsError(f"cannot reach Kafka at {_where(kafka)} ({type(exc).__name__})") from None
    return admin


async def _offsets(
    kafka: dict[str, Any], topics: list[str], group: str | None = None
) -> dict[TopicPartition, tuple[int, int]]:
    """(end offset, committed offset of `group` or 0) per partition."""
    consumer = AIOKafkaConsumer(**kafka, group_id=group, enable_auto_commit=False)
    try:
        await asyncio.wait_for(consumer.start(), 8)
    except Exception as exc:
        raise OpsError(f"cannot reach Kafka at {_where(kafka)} ({type(exc).__name__})") from None
    try:
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        if not tps:
            return {}
        ends = await consumer.end_offsets(tps)
        out = {}
        for tp in tps:
            committed = (await consumer.committed(tp)) if group else 0
            out[tp] = (ends.get(tp, 0), committed or 0)
        return out
    finally:
        await consumer.stop()


def consumer_groups() -> dict[str, list[str]]:
    from apphost import registry

    return registry.consumer_groups()


async def topics_cmd(settings: Settings, describe: bool) -> None:
    kafka = kafka_of(settings)
    admin = await _admin(kafka)
    try:
        names = sorted(t for t in await admin.list_topics() if not t.startswith("__"))
    finally:
        await admin.close()
    ends = await _offsets(kafka, names)
    print(f"{'topic':<34} {'partitions':>10} {'messages':>10}  consumers")
    for name in names:
        parts = [tp for tp in ends if tp.topic == name]
        total = sum(ends[tp][0] for tp in parts)
        t = TOPICS_BY_NAME.get(name)
        print(f"{name:<34} {len(parts):>10} {total:>10}  {', '.join(t.consumers) if t else ''}")
    if not describe:
        return
    print(f"\n{'consumer group':<28} {'topic':<30} {'partition':>9} {'end':>8} {'committed':>9} {'lag':>6}")
    for group, topics in consumer_groups().items():
        offsets = await _offsets(kafka, [t for t in topics if t in names], group)
        for tp, (end, committed) in sorted(offsets.items()):
            print(f"{group:<28} {tp.topic:<30} {tp.partition:>9} {end:>8} {committed:>9} {max(0, end - committed):>6}")


def _headers(record: Any) -> dict[str, str]:
    return {k: v.decode(errors="replace") for k, v in record.headers or ()}


def render(record: Any) -> str:
    try:
        value: Any = orjson.loads(record.value)
    except orjson.JSONDecodeError:
        value = record.value.decode(errors="replace")
    doc = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": datetime.fromtimestamp(record.timestamp / 1000, UTC).isoformat(timespec="milliseconds"),
        "key": record.key.decode(errors="replace") if record.key else None,
        "headers": _headers(record),
        "value": _redact(value),
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()


async def _read(
    kafka: dict[str, Any],
    topic: str,
    follow: bool,
    max_messages: int | None,
    keep: Callable[[Any], bool],
    on_record: Callable[[Any], None],
) -> int:
    consumer = AIOKafkaConsumer(topic, **kafka, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False)
    try:
        await asyncio.wait_for(consumer.start(), 8)
    except Exception as exc:
        raise OpsError(f"cannot reach Kafka at {_where(kafka)} ({type(exc).__name__})") from None
    seen = 0
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not parts:
            raise OpsError(f"no topic {topic!r}")
        ends = await consumer.end_offsets(parts)
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            for recs in batch.values():
                for r in recs:
                    if keep(r):
                        on_record(r)
                        seen += 1
                        if max_messages and seen >= max_messages:
                            return seen
            if not follow and not batch:
                positions = {tp: await consumer.position(tp) for tp in parts}
                if all(positions[tp] >= ends.get(tp, 0) for tp in parts):
                    return seen
    finally:
        await consumer.stop()


async def tail_cmd(
    settings: Settings, topic: str, return_id: str | None, follow: bool, max_messages: int | None
) -> None:
    key = return_id.encode() if return_id else None
    await _read(
        kafka_of(settings),
        topic,
        follow,
        max_messages,
        lambda r: key is None or r.key == key,
        lambda r: print(render(r)),
    )


def _dlq_topics() -> list[str]:
    return [t.dlq for t in CATALOG if t.consumers]


async def dlq_counts(kafka: dict[str, Any], topics: list[str]) -> dict[str, tuple[int, int]]:
    """(messages, of which replayed) per dead-letter topic, counted by reading each topic to its end (until
    a fetch returns nothing). Broker end offsets are not used: the embedded broker reports a partition's
    end as the base offset of its last record batch + 1, which under-counted (26 shown, 32 readable)."""
    cursor = await _offsets(kafka, topics, REPLAY_GROUP)
    counts = {t: [0, 0] for t in topics}
    consumer = AIOKafkaConsumer(*topics, **kafka, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        # Until a fetch returns nothing and every position has reached at least the reported end (a lower
        # bound of the true end on either broker).
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, recs in batch.items():
                counts[tp.topic][0] += len(recs)
                counts[tp.topic][1] += sum(r.offset < cursor.get(tp, (0, 0))[1] for r in recs)
            if not batch and all([await consumer.position(tp) >= end for tp, (end, _) in cursor.items()]):
                break
    finally:
        await consumer.stop()
    return {t: (n, done) for t, (n, done) in counts.items()}


async def dlq_list_cmd(settings: Settings) -> None:
    counts = await dlq_counts(kafka_of(settings), _dlq_topics())
    print(f"{'dead-letter topic':<36} {'messages':>8} {'replayed':>8} {'pending':>8}")
    for topic, (n, done) in counts.items():
        print(f"{topic:<36} {n:>8} {done:>8} {n - done:>8}")


async def dlq_show_cmd(settings: Settings, topic: str, max_messages: int | None) -> None:
    if not topic.endswith(DLQ_SUFFIX):
        raise OpsError(f"{topic!r} is not a dead-letter topic (they end in {DLQ_SUFFIX})")

    def show(r: Any) -> None:
        h = _headers(r)
        print(f"# offset {r.offset}: {h.get(HEADER_DLQ_ERROR_TYPE)}: {h.get(HEADER_DLQ_ERROR_MESSAGE)}")
        print(render(r))

    await _read(kafka_of(settings), topic, False, max_messages, lambda r: True, show)


async def dlq_replay_cmd(settings: Settings, topic: str, dry_run: bool) -> int:
    """Re-publish pending dead letters to their original topic with a replay header. The replay cursor
    (consumer group `returnflow.dlq-replay`) moves only after the broker acknowledged the re-publish,
    and nothing is removed from the DLQ."""
    if not topic.endswith(DLQ_SUFFIX):
        raise OpsError(f"{topic!r} is not a dead-letter topic (they end in {DLQ_SUFFIX})")
    kafka = kafka_of(settings)
    ((n, replayed),) = (await dlq_counts(kafka, [topic])).values()
    total = n - replayed
    if total == 0:
        print(f"{topic}: nothing to replay")
        return 0
    consumer = AIOKafkaConsumer(
        topic,
        **kafka,
        group_id=REPLAY_GROUP,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
    )
    producer = AIOKafkaProducer(**kafka, acks="all", enable_idempotence=settings.kafka_enable_idempotence)
    await consumer.start()
    await producer.start()
    done = 0
    try:
        while done < total:
            batch = await consumer.getmany(timeout_ms=2000)
            if not batch:
                break
            for tp, recs in batch.items():
                for r in recs:
                    if done >= total:
                        break  # arrived after the count: the next replay takes it
                    h = _headers(r)
                    original = h.get(HEADER_DLQ_TOPIC) or topic.removesuffix(DLQ_SUFFIX)
                    if not dry_run:
                        headers = [(k, v.encode()) for k, v in h.items() if not k.startswith("rf-dlq-")]
                        headers.append((HEADER_REPLAYED, f"{topic}:{r.partition}:{r.offset}".encode()))
                        await producer.send_and_wait(original, r.value, key=r.key, headers=headers)
                        await consumer.commit({tp: r.offset + 1})
                    done += 1
                    progress(done, total, f"replaying {topic}")
    finally:
        await producer.stop()
        await consumer.stop()
    print(f"{topic}: {'would replay' if dry_run else 'replayed'} {done} message(s)")
    return done


async def timeline_cmd(settings: Settings, return_id: str, token_flag: str | None = None) -> None:
    url = f"{base_url_for(settings, 'returns')}/v1/returns/{return_id}/timeline"
    token, _ = resolve_token(token_flag)
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            r = await client.get(url, headers=bearer(token))
    except httpx.HTTPError as exc:
        raise OpsError(f"cannot reach the returns service at {base_url_for(settings, 'returns')} ({exc!r})") from None
    if r.status_code != 200:
        raise OpsError(problem_text(r))
    body = r.json()
    print(f"return {body['return_id']}  status={body['status']}")
    for e in body["entries"]:
        print(f"  {e['occurred_at'][:19]}  {e['type']:<28} {e['summary']}")


async def backlogs_cmd(settings: Settings, services: list[str]) -> int:
    """What waits in each service, as its /metrics says now (the gauges the alerts read, refreshed every 15 s):
    its backlogs with the oldest item's age, its consumer groups' lag from the broker's side, and whether it
    reaches its database and brokers. Exit 1 when a service does not answer."""
    from prometheus_client.parser import text_string_to_metric_families

    from apphost.registry import SERVICES

    rows: list[tuple[str, str, str, str]] = []
    unreachable = 0
    async with httpx.AsyncClient(timeout=5) as client:
        for name in services or list(SERVICES):
            try:
                r = await client.get(f"{base_url_for(settings, name)}/metrics")
                r.raise_for_status()
            except httpx.HTTPError as exc:
                rows.append((name, "(service)", "unreachable", type(exc).__name__))
                unreachable += 1
                continue
            samples = [s for f in text_string_to_metric_families(r.text) for s in f.samples]
            ages = {s.labels["backlog"]: s.value for s in samples if s.name == "returnflow_backlog_oldest_age_seconds"}
            for s in samples:
                if s.name == "returnflow_backlog_items":
                    age = ages.get(s.labels["backlog"], 0.0)
                    rows.append((name, s.labels["backlog"], f"{s.value:.0f}", _age(age) if s.value else ""))
                elif s.name == "returnflow_dependency_up":
                    rows.append((name, f"{s.labels['dependency']} reachable", "yes" if s.value else "NO", ""))
            lag: dict[str, float] = {}
            for s in samples:
                if s.name == "returnflow_consumer_group_lag":
                    lag[s.labels["group"]] = lag.get(s.labels["group"], 0.0) + s.value
            rows += [(name, f"lag {group}", f"{value:.0f}", "") for group, value in sorted(lag.items())]
    print(f"{'service':<10} {'backlog':<36} {'items':>11}  oldest")
    for service, what, items, oldest in rows:
        print(f"{service:<10} {what:<36} {items:>11}  {oldest}")
    return 1 if unreachable else 0


def _age(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("topics", help="list topics; --describe adds consumer-group lag")
    p.add_argument("--describe", action="store_true")
    p = sub.add_parser("tail", help="print a topic's messages (pretty JSON, headers, phone numbers masked)")
    p.add_argument("topic")
    p.add_argument("--return-id")
    p.add_argument("--follow", "-f", action="store_true")
    p.add_argument("--max", type=int, dest="max_messages")
    p = sub.add_parser("dlq", help="dead-letter topics: list, show, replay")
    p.add_argument("action", choices=["list", "show", "replay"])
    p.add_argument("topic", nargs="?")
    p.add_argument("--max", type=int, dest="max_messages")
    p.add_argument("--dry-run", action="store_true")
    p = sub.add_parser(
        "backlogs", help="what waits in each service (backlogs, oldest item, broker-side lag), from its /metrics"
    )
    p.add_argument("services", nargs="*", help="default: every service")
    p = sub.add_parser("timeline", help="a return's timeline")
    p.add_argument("return_id")
    p.add_argument("--token", help=f"your reader token (default: ${TOKEN_ENV}, then `returnflow login`'s file)")


def run(args: argparse.Namespace, settings: Settings) -> int | None:
    """Run an ops command; None when `args` is not one of ours."""
    cmd = args.cmd
    if cmd == "topics":
        asyncio.run(topics_cmd(settings, args.describe))
    elif cmd == "tail":
        asyncio.run(tail_cmd(settings, args.topic, args.return_id, args.follow, args.max_messages))
    elif cmd == "dlq":
        if args.action == "list":
            asyncio.run(dlq_list_cmd(settings))
        elif not args.topic:
            raise OpsError(f"dlq {args.action} needs a dead-letter topic (see `returnflow dlq list`)")
        elif args.action == "show":
            asyncio.run(dlq_show_cmd(settings, args.topic, args.max_messages))
        else:
            asyncio.run(dlq_replay_cmd(settings, args.topic, args.dry_run))
    elif cmd == "backlogs":
        return asyncio.run(backlogs_cmd(settings, args.services))
    elif cmd == "timeline":
        asyncio.run(timeline_cmd(settings, args.return_id, args.token))
    else:
        return None
    return 0
