"""One way to run a service: FastAPI (HTTP + OpenAPI) with a FastStream Kafka broker, an asyncpg
pool on the service's own schema, the outbox relay and idempotent batch consumers.

A service module declares a `ServiceSpec`; `create_app(spec)` wires the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import asyncpg
import structlog
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata
from fastapi import APIRouter, Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.middlewares import AckPolicy
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from returnflow import backlogs, db, metrics
from returnflow.backlogs import BacklogQuery
from returnflow.consumer import INFRA_ERRORS, Batch, Handler, IdempotentConsumer
from returnflow.db import Conn
from returnflow.group_lag import GroupLag
from returnflow.http import (
    HttpProblem,
    Reader,
    find_by_token,
    http_exception_problem,
    problem_json,
    problem_response,
    refuse_nul_in_parameters,
    request_validation_problem,
    token_digest,
)
from returnflow.kafka import client_options, create_topics, make_broker, publisher_for, security_problem
from returnflow.logging import configure_logging, get_logger
from returnflow.loops import Worker
from returnflow.openapi import truthful_openapi
from returnflow.outbox import Relay
from returnflow.settings import DEV_PREFIX, ServiceSettings, Settings, get_settings, refuse_development_secrets
from returnflow.shops import Shops, ShopsFileError, shop_secret_paths
from returnflow.tracing import Tracing
from returnflow.webhook_log import WebhookLogMiddleware

log = get_logger("returnflow.service")

C = TypeVar("C")


@dataclass(frozen=True)
class ConsumerSpec(Generic[C]):
    """A consumer group `<service>.<name>` over `topics`. `apply(context, conn, batch)` applies the fresh
    events of a batch inside the transaction that records them as processed."""

    name: str
    topics: Sequence[str]
    apply: Callable[[C, Conn, Batch], Awaitable[None]]


@dataclass
class ServiceSpec(Generic[C]):
    """What a service is: its name, settings, the typed context its handlers and routes share (built
    once the pool exists, closed at stop), its HTTP router, consumers and background workers."""

    name: str
    folder: Path
    consumers: Sequence[ConsumerSpec[C]] = ()
    settings: type[ServiceSettings] = ServiceSettings
    context: Callable[[Runtime, Any], Awaitable[C]] | None = None
    close: Callable[[C], Awaitable[None]] | None = None
    router: APIRouter | None = None
    workers: Sequence[Callable[[C], Coroutine[Any, Any, None]]] = ()
    idle: Callable[[C], Awaitable[bool]] | None = None  # no work of the workers' due (see Runtime.idle)
    # The service's own people who may read its GETs, besides the runtime's read tokens (e.g. the refunds
    # roster as agents): `readers(context, token)` -> the Reader, or None.
    readers: Callable[[C, str], Awaitable[Reader | None]] | None = None
    description: str = ""
    # The service's business backlogs (returnflow/backlogs.py), counted on a slow loop as gauges.
    backlogs: BacklogQuery | None = None

    @property
    def schema(self) -> str:
        return self.name

    def migrations(self) -> list[db.Migration]:
        return db.migrations_for(self.schema, self.folder)


@dataclass
class Runtime:
    """What a running service has. Handlers and routes receive it."""

    spec: ServiceSpec
    settings: Settings
    dsn: str
    bootstrap: str
    broker: KafkaBroker
    service_settings: ServiceSettings = field(default_factory=ServiceSettings)
    shops: Shops = field(default_factory=Shops)
    tracing: Tracing = field(default_factory=Tracing.disabled)
    pool: asyncpg.Pool = field(init=False)
    relay: Relay = field(init=False)
    context: Any = None
    consumers: dict[str, IdempotentConsumer] = field(default_factory=dict)
    kafka_consumers: dict[str, Any] = field(default_factory=dict)  # group -> its aiokafka consumer, once started
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def wake_relay(self) -> None:
        self.relay.wake()

    async def idle(self) -> dict[str, Any]:
        """Whether this service has nothing left to do right now: every consumer group joined and has
        committed up to the end of each partition it holds, and the outbox is drained (plus the
        service's own `idle` check, e.g. no payment due). Tests wait on this instead of sleeping to
        prove that nothing more happens; `GET /idlez` serves it."""
        waiting: list[str] = []
        if await self.pool.fetchval("SELECT EXISTS (SELECT 1 FROM outbox WHERE published_at IS NULL)"):
            waiting.append("outbox")
        for group in self.consumers:
            if not await _caught_up(self.kafka_consumers.get(group) or _started_consumer(self, group)):
                waiting.append(group)
        idle = self.spec.idle if self.settings.serves else None  # the workers run in the web half
        if idle is not None and self.context is not None and not await idle(self.context):
            waiting.append("workers")
        return {"idle": not waiting, "waiting": waiting}


def require_endpoints(settings: Settings) -> tuple[str, str]:
    if not settings.database_url or not settings.kafka_bootstrap:
        raise SystemExit(
            "returnflow: a service needs RETURNFLOW_DATABASE_URL and RETURNFLOW_KAFKA_BOOTSTRAP "
            "(`returnflow up` sets both)"
        )
    if problem := security_problem(settings):
        raise SystemExit(f"returnflow: {problem}")
    return settings.database_url.get_secret_value(), settings.kafka_bootstrap


def _started_consumer(rt: Runtime, group: str) -> Any:
    for sub in rt.broker.subscribers:
        consumer = getattr(sub, "consumer", None)
        if consumer is not None and getattr(consumer, "_group_id", None) == group:
            rt.kafka_consumers[group] = consumer
            return consumer
    return None


async def _caught_up(kafka_consumer: Any) -> bool:
    """Joined, and committed at or past the end offset of every partition it holds. (The embedded broker
    reports a partition's end as the base offset of its last record batch + 1, at most the true end:
    a consumer that committed past the last record is still caught up.)"""
    if kafka_consumer is None:
        return False
    assigned = kafka_consumer.assignment()
    if not assigned:
        return False
    ends = await kafka_consumer.end_offsets(list(assigned))
    for tp in assigned:
        if ends.get(tp, 0) > (await kafka_consumer.committed(tp) or 0):
            return False
    return True


def relay_for(rt: Runtime) -> Relay:
    """The outbox relay of a runtime whose pool is open."""
    s = rt.settings
    return Relay(
        pool=rt.pool,
        dsn=rt.dsn,
        schema=rt.spec.schema,
        publish=publisher_for(rt.broker),
        bootstrap=rt.bootstrap,
        batch_size=s.outbox_batch_size,
        poll_interval_s=s.outbox_poll_interval_s,
        retention_hours=s.outbox_retention_hours,
        dedupe_retention_hours=s.consumer_dedupe_retention_hours,
        broker_check_interval_s=s.outbox_broker_check_interval_s,
        ensure_topics=_ensure_topics(rt.bootstrap, s.kafka_replication_factor, client_options(s)),
        on_broker_loss=lambda: _rewind_consumers(rt.broker),
        kafka_options=client_options(s),
        tracing=rt.tracing,
        # the consumers half of a split service wakes its relay itself, after each batch; the web half listens
        listen=s.serves,
        gather_s=rt.service_settings.relay_gather_ms / 1000,
    )


def consumer_for(rt: Runtime, cspec: ConsumerSpec[Any]) -> IdempotentConsumer:
    """The idempotent consumer of one of the service's consumer groups (its pool set once open)."""
    return IdempotentConsumer(
        name=f"{rt.spec.name}.{cspec.name}",
        pool=rt.pool if hasattr(rt, "pool") else None,  # type: ignore[arg-type]  # set at start
        handler=_handler(rt, cspec),
        max_attempts=rt.settings.consumer_max_attempts,
        backoff_base_s=rt.settings.consumer_backoff_base_s,
        backoff_max_s=rt.settings.consumer_backoff_max_s,
        tracing=rt.tracing,
    )


def _handler(rt: Runtime, cspec: ConsumerSpec[Any]) -> Handler:
    apply = cspec.apply
    return lambda conn, deliveries: apply(rt.context, conn, Batch(deliveries))


def _subscribe(rt: Runtime, cspec: ConsumerSpec[Any]) -> None:
    consumer = consumer_for(rt, cspec)
    group = consumer.name
    rt.consumers[group] = consumer
    fetch = rt.service_settings.fetch_options(rt.settings)
    sub = rt.broker.subscriber(
        *cspec.topics,
        group_id=group,
        decoder=keep_records_raw,
        batch=True,
        max_records=rt.settings.consumer_max_records,
        batch_timeout_ms=rt.settings.consumer_batch_timeout_ms,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.MANUAL,
        session_timeout_ms=rt.settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=rt.settings.kafka_heartbeat_interval_ms,
        fetch_min_bytes=fetch["fetch_min_bytes"],
        fetch_max_wait_ms=fetch["fetch_max_wait_ms"],
    )

    async def on_batch(msg: KafkaMessage) -> None:
        records = msg.raw_message if isinstance(msg.raw_message, tuple) else (msg.raw_message,)
        rt.kafka_consumers[group] = sub.consumer
        await consumer.process_records(records)
        if not rt.settings.serves:
            rt.wake_relay()  # what the batch wrote to the outbox (this relay does not LISTEN)
        # Commit only after the transaction committed, and only the partitions this batch read: a
        # consumer of many topics holds dozens of partitions, and committing them all cost 3 times
        # the CPU (client and broker) of committing the few a batch touched.
        await _commit_positions(sub.consumer, records)
        _record_lag(group, sub.consumer, records)

    sub(on_batch)


async def _commit_positions(kafka_consumer: Any, records: Sequence[Any]) -> None:
    """Commit the consumer's position in each partition of the batch. (Its positions, not the batch's
    offsets: after a rewind to the start of a new log they are the new log's.)"""
    if kafka_consumer is None:
        return
    partitions = {TopicPartition(r.topic, r.partition) for r in records}
    await kafka_consumer.commit({tp: OffsetAndMetadata(await kafka_consumer.position(tp), "") for tp in partitions})


async def keep_records_raw(msg: Any) -> None:
    """FastStream's decoder JSON-decodes every record of a batch for the handler's argument; ours reads
    the raw records (IdempotentConsumer decodes and validates each once), so skip that work."""
    return None


def _record_lag(group: str, kafka_consumer: Any, records: Sequence[Any]) -> None:
    if kafka_consumer is None:
        return
    last: dict[tuple[str, int], int] = {}
    for r in records:
        last[(r.topic, r.partition)] = max(last.get((r.topic, r.partition), -1), r.offset)
    for (topic, partition), offset in last.items():
        high = kafka_consumer.highwater(TopicPartition(topic, partition))
        if high is not None:
            metrics.CONSUMER_LAG.labels(group, topic, str(partition)).set(max(0, high - offset - 1))


# probes and scrapes: no trace of their own (at rate 1.0 they would outnumber the returns' spans)
UNTRACED_PATHS = frozenset({"/metrics", "/healthz", "/readyz", "/idlez"})


class HttpMetricsMiddleware:
    """Pure ASGI: request count/latency per route template, the request's root span (continuing an
    incoming `traceparent`), and a correlation id per request: the trace id, unless the caller sent an
    `X-Correlation-Id` of its own that is not one."""

    def __init__(self, app: Any, tracing: Tracing | None = None) -> None:
        self.app = app
        self.tracing = tracing or Tracing.disabled()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}
        cid = traceparent = None
        for k, v in scope.get("headers", ()):
            if k == b"x-correlation-id":
                cid = v.decode(errors="replace")[:128]
            elif k == b"traceparent":
                traceparent = v.decode(errors="replace")
        request = None
        if self.tracing.enabled and scope["path"] not in UNTRACED_PATHS:
            request = self.tracing.request(scope["method"], scope["path"], traceparent, cid)
            request.enter()
            cid = request.correlation_id
        cid = cid or uuid.uuid4().hex
        scope.setdefault("state", {})["correlation_id"] = cid

        async def _send(message: Any) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", []).append((b"x-correlation-id", cid.encode()))
            await send(message)

        structlog.contextvars.bind_contextvars(correlation_id=cid)
        try:
            await self.app(scope, receive, _send)
        finally:
            structlog.contextvars.unbind_contextvars("correlation_id")
            route = scope.get("route")
            label = getattr(route, "path", "unmatched")
            if request is not None:
                request.end(getattr(route, "path", None), status["code"])
            metrics.HTTP_REQUESTS.labels(label, str(status["code"])).inc()
            metrics.HTTP_SECONDS.labels(label).observe(time.perf_counter() - started)


def create_app(
    spec: ServiceSpec[Any], settings: Settings | None = None, service_settings: ServiceSettings | None = None
) -> FastAPI:
    """The service as an ASGI app: its routes, the ops endpoints and the one error shape; consumers,
    relay and workers run for the app's lifespan."""
    settings = settings or get_settings()
    service_settings = service_settings or spec.settings.load()
    refuse_development_secrets(settings, service_settings)
    shops = load_shops_or_exit(settings)
    dsn, bootstrap = require_endpoints(settings)
    tracing = Tracing.create(spec.name, settings)
    broker = make_broker(settings, bootstrap, client_id=f"returnflow-{spec.name}")
    rt = Runtime(
        spec=spec,
        settings=settings,
        dsn=dsn,
        bootstrap=bootstrap,
        broker=broker,
        service_settings=service_settings,
        shops=shops,
        tracing=tracing,
    )
    if settings.consumes:  # the web half of a split service leaves its consumer groups to the other
        for cspec in spec.consumers:
            _subscribe(rt, cspec)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        workers = await _start(app, rt)
        try:
            yield
        finally:
            await _stop(rt, workers)

    app = FastAPI(
        title=f"returnflow {spec.name}",
        description=spec.description,
        lifespan=lifespan,
        dependencies=[Depends(refuse_nul_in_parameters)],
    )
    app.state.runtime = rt
    app.state.find_reader = reader_lookup(rt)
    app.openapi = lambda: truthful_openapi(app)  # type: ignore[method-assign]
    _error_handlers(app)
    app.add_middleware(WebhookLogMiddleware)  # inside the metrics middleware: the correlation id is set
    app.add_middleware(HttpMetricsMiddleware, tracing=tracing)
    _ops_routes(app, rt)
    if spec.router is not None and settings.serves:
        app.include_router(spec.router)
    return app


def load_shops_or_exit(settings: Settings) -> Shops:
    """The shops file in force at start: a bad one (or a development secret in it outside the local
    stack) stops the start in one line naming the shop and the key."""
    try:
        shops = Shops.load(settings.shops_file)
    except ShopsFileError as e:
        raise SystemExit(f"returnflow: {e}") from None
    if not settings.dev_stack and (found := shop_secret_paths(shops.shops, lambda v: v.startswith(DEV_PREFIX))):
        raise SystemExit(
            f"returnflow: refusing to start with development secrets outside the local stack: {', '.join(found)} "
            f"in {settings.shops_file}"
        )
    return shops


def reader_lookup(rt: Runtime) -> Callable[[str], Awaitable[Reader | None]]:
    """Who holds a read token: the runtime's (RETURNFLOW_READ_TOKENS), else one of the service's own people."""
    tokens = rt.settings.read_tokens
    by_digest = {token_digest(t.token.get_secret_value()): Reader(holder, t.role) for holder, t in tokens.items()}

    async def find(token: str) -> Reader | None:
        found = find_by_token(token, by_digest)
        if found is None and rt.spec.readers is not None and rt.context is not None:
            found = await rt.spec.readers(rt.context, token)
        return found

    return find


async def _start(app: FastAPI, rt: Runtime) -> list[asyncio.Task[None]]:
    spec, settings = rt.spec, rt.settings
    configure_logging(spec.name, settings.log_format, settings.log_level)
    rt.tracing.activate()  # the workers, consumers and group committers started below trace as this service
    await db.migrate(rt.dsn, spec.schema, spec.migrations())
    rt.pool = await db.create_pool(rt.dsn, spec.schema, spec.name, settings.db_pool_min, settings.db_pool_max)
    for c in rt.consumers.values():
        c.pool = rt.pool
    rt.relay = relay_for(rt)
    if spec.context is not None:
        rt.context = await spec.context(rt, rt.service_settings)
        app.state.context = rt.context
    await rt.broker.connect()
    rt.tasks.append(asyncio.create_task(rt.relay.run(), name=f"{spec.name}-relay"))
    await rt.broker.start()
    workers = [
        asyncio.create_task(w(rt.context), name=f"{spec.name}-{w.__name__}")
        for w in (spec.workers if settings.serves else ())
    ]
    rt.tasks.extend(workers)
    rt.tasks.append(asyncio.create_task(_watch_loop_lag(), name=f"{spec.name}-loop-lag"))
    if rt.shops.path is not None:
        shops_worker = Worker("shops", rt.shops.check, poll_s=settings.shops_reload_interval_s)
        rt.tasks.append(asyncio.create_task(shops_worker.run(), name=f"{spec.name}-shops"))
    rt.tasks.append(asyncio.create_task(_watch_backlogs(rt), name=f"{spec.name}-backlogs"))
    if spec.consumers:  # both halves of a split service: the web half's /metrics shows its groups' lag too
        rt.tasks.append(asyncio.create_task(_watch_group_lag(rt), name=f"{spec.name}-group-lag"))
    # What exists now (modules, models, the app) lives as long as the process: keep it out of every
    # garbage collection, and collect the young generation less often (it showed as up to 5 % of a
    # service's CPU under load).
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    log.info("service started")
    return workers


async def _stop(rt: Runtime, workers: list[asyncio.Task[None]]) -> None:
    """Workers end first (what they finish while stopping, e.g. an SMS already at the provider, is still
    recorded); then the consumers stop taking messages and finish their in-flight batches (and commits);
    then the relay publishes what all of that wrote — while the producer is still connected — and only
    then the broker connection closes."""
    for t in workers:
        t.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    await asyncio.gather(*(sub.stop() for sub in rt.broker.subscribers), return_exceptions=True)
    await rt.relay.stop()
    await rt.broker.stop()
    for t in rt.tasks:
        t.cancel()
    await asyncio.gather(*rt.tasks, return_exceptions=True)
    if rt.spec.close is not None and rt.context is not None:
        with contextlib.suppress(Exception):
            await rt.spec.close(rt.context)
    await rt.pool.close()
    rt.tracing.shutdown()  # the spans still buffered are exported
    log.info("service stopped")


async def _unavailable(request: Any, exc: Exception) -> Response:
    """The database is down or restarting: nothing was accepted, the caller should retry."""
    log.warning("database unavailable during request", path=request.url.path, error=repr(exc))
    return problem_json(503, "temporarily unavailable, retry later", headers={"Retry-After": "1"})


def _error_handlers(app: FastAPI) -> None:
    for exc_type in INFRA_ERRORS:
        app.add_exception_handler(exc_type, _unavailable)
    app.add_exception_handler(HttpProblem, problem_response)
    app.add_exception_handler(RequestValidationError, request_validation_problem)
    app.add_exception_handler(StarletteHTTPException, http_exception_problem)


async def _readiness(rt: Runtime) -> JSONResponse:
    """Ready = PostgreSQL answers and the migrations are applied. The broker is reported but does not
    decide: every request writes to PostgreSQL (events through the outbox), so a service keeps taking
    webhooks while Kafka is away and its relay publishes them when Kafka is back. Taking every pod out
    of the load balancer for a Kafka outage would stop intake for nothing."""
    checks: dict[str, str] = {}
    try:
        pending = await asyncio.wait_for(db.pending_migrations(rt.pool, rt.spec.migrations()), 2)
        checks["database"] = "ok"
        checks["migrations"] = "ok" if not pending else f"pending: {', '.join(pending)}"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    try:
        checks["broker"] = "ok" if await rt.broker.ping(timeout=2.0) else "unreachable"
    except Exception as exc:
        checks["broker"] = f"unreachable: {type(exc).__name__}"
    return JSONResponse({"ready": ok, "service": rt.spec.name, "checks": checks}, status_code=200 if ok else 503)


class Alive(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {"status": "alive", "service": "returns"}})
    status: Literal["alive"]
    service: str


class Readiness(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "ready": True,
                "service": "returns",
                "checks": {"database": "ok", "migrations": "ok", "broker": "ok"},
            }
        }
    )
    ready: bool
    service: str
    checks: dict[str, str] = Field(description="database, migrations (decide readiness) and broker (reported)")


class Idleness(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"example": {"service": "returns", "idle": False, "waiting": ["outbox"]}}
    )
    service: str
    idle: bool
    waiting: list[str] = Field(description="what still has work: outbox, a consumer group, workers")


PROMETHEUS_TEXT = {
    200: {
        "description": "Prometheus text exposition format",
        "content": {"text/plain": {"schema": {"type": "string"}, "example": "returnflow_http_requests_total 3.0\n"}},
    }
}
ASYNCAPI_JSON = {
    200: {
        "description": "AsyncAPI 3.0 document",
        "content": {"application/json": {"schema": {"type": "object"}, "example": {"asyncapi": "3.0.0"}}},
    }
}


def _ops_routes(app: FastAPI, rt: Runtime) -> None:
    @app.get("/healthz", tags=["ops"], response_model=Alive)
    async def healthz() -> dict[str, str]:
        return {"status": "alive", "service": rt.spec.name}

    @app.get(
        "/readyz",
        tags=["ops"],
        description=inspect.cleandoc(_readiness.__doc__ or ""),
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "not ready: the database or the migrations are not"}},
    )
    async def readyz() -> JSONResponse:
        return await _readiness(rt)

    @app.get(
        "/idlez",
        tags=["ops"],
        summary="Whether the service has consumed everything and drained its outbox",
        response_model=Idleness,
    )
    async def idlez() -> JSONResponse:
        return JSONResponse({"service": rt.spec.name, **await rt.idle()}, status_code=200)

    @app.get(
        "/metrics",
        tags=["ops"],
        summary="Prometheus metrics (text exposition format)",
        response_class=PlainTextResponse,
        responses=PROMETHEUS_TEXT,  # type: ignore[arg-type]
    )
    async def prometheus_metrics() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/asyncapi.json",
        tags=["ops"],
        summary="AsyncAPI 3.0 document of this service's topics",
        responses=ASYNCAPI_JSON,  # type: ignore[arg-type]
    )
    async def asyncapi() -> Response:
        from returnflow.asyncapi import asyncapi_for, render

        return Response(render(asyncapi_for(rt.spec)), media_type="application/json")


async def _watch_loop_lag(interval_s: float = 0.05) -> None:
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        metrics.EVENT_LOOP_LAG.observe(max(0.0, loop.time() - due))


async def _watch_backlogs(rt: Runtime) -> None:
    """The service's backlogs and whether its database answers, every `backlog_interval_s`."""
    while True:
        await backlogs.refresh(rt.spec.name, rt.pool, rt.spec.backlogs, rt.shops)
        await asyncio.sleep(rt.settings.backlog_interval_s)


LAG_TIMEOUT_S = 5.0  # a broker that does not answer in this long counts as unreachable


async def _watch_group_lag(rt: Runtime) -> None:
    """Broker-side lag of the service's consumer groups (returnflow/group_lag.py), every
    `consumer_group_lag_interval_s`; whether the brokers answered, as `returnflow_dependency_up`."""
    groups = {f"{rt.spec.name}.{c.name}": list(c.topics) for c in rt.spec.consumers}
    lag = GroupLag(rt.bootstrap, groups, client_options(rt.settings))
    up = metrics.DEPENDENCY_UP.labels(rt.spec.name, "kafka")
    try:
        while True:
            try:
                await asyncio.wait_for(lag.refresh(), LAG_TIMEOUT_S)
                up.set(1)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                up.set(0)
                log.warning("consumer group lag not measured: broker unreachable", error=repr(exc))
            await asyncio.sleep(rt.settings.consumer_group_lag_interval_s)
    finally:
        await lag.close()


async def _rewind_consumers(broker: KafkaBroker) -> None:
    for sub in broker.subscribers:
        consumer = getattr(sub, "consumer", None)
        if consumer is not None and consumer.assignment():
            await consumer.seek_to_beginning()
    log.warning("broker lost its log: consumers re-read it from the start")


def _ensure_topics(
    bootstrap: str, replication_factor: int, options: Mapping[str, Any]
) -> Callable[[], Awaitable[None]]:
    async def ensure() -> None:
        await create_topics(bootstrap, replication_factor=replication_factor, options=options)

    return ensure
