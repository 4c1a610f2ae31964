"""Configuration from environment variables (prefix RETURNFLOW_), or from files in a mounted secrets
directory (RETURNFLOW_SECRETS_DIR: one file per setting, named like its variable, e.g.
`/run/secrets/returnflow_webhook_secrets`).

Development secrets all start with `dev-`. They make `make run` work out of the box, and a service
refuses to start with one unless it runs in the local development stack (`returnflow up` with the
embedded broker and database sets RETURNFLOW_DEV_STACK).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_PREFIX = "dev-"

# Development-only secrets so `make run` works out of the box; production sets its own.
DEV_WEBHOOK_SECRETS: dict[str, list[str]] = {
    "generic": ["dev-generic-secret"],
    "shopify": ["dev-shopify-secret"],
    "carriers": ["dev-carrier-secret"],
    "sms": ["dev-sms-secret"],
}


ReadRole = Literal["ops", "agent", "auditor", "warehouse"]


class ReadToken(BaseModel):
    """A person's (or a tool's) token for the services' reads, and the role it reads with."""

    token: SecretStr
    role: ReadRole


class Loadable(BaseSettings):
    @classmethod
    def load(cls) -> Self:
        """From the environment and, when RETURNFLOW_SECRETS_DIR is set, the files mounted there."""
        secrets_dir = os.environ.get("RETURNFLOW_SECRETS_DIR")
        return cls(_secrets_dir=secrets_dir) if secrets_dir else cls()


class Settings(Loadable):
    model_config = SettingsConfigDict(env_prefix="RETURNFLOW_", extra="ignore")

    data_dir: Path = Path(".data")
    # Set by `returnflow up` when it runs the embedded broker and database: development secrets allowed.
    dev_stack: bool = False
    # External servers: when set, nothing embedded is started for that part.
    kafka_bootstrap: str | None = None
    database_url: SecretStr | None = None
    embedded_kafka_port: int = 19092

    host: str = "127.0.0.1"
    # Where customers and providers reach returnflow from outside: SMS links are <this>/r/<token>, SMS
    # status callbacks <this>/v1/webhooks/sms/... (an ingress routes /r/ to returns, the rest by path).
    # `returnflow up` sets it to the returns service on this machine when it is unset.
    public_base_url: str | None = None
    # Signs the customer links in SMS (returnflow/links.py); the same value for notify and returns. Unset:
    # texts go without a link and the page finds no return. `returnflow up` gives a development one.
    customer_link_secret: SecretStr | None = None
    # Kafka producer: idempotence is refused by the embedded broker; turn it on for Apache Kafka.
    kafka_enable_idempotence: bool = False
    # Replication of topics a service re-creates after the broker lost them (1 for the embedded broker).
    kafka_replication_factor: int = 1
    kafka_acks: str = "all"
    kafka_linger_ms: int = 2
    kafka_max_batch_size: int = 256 * 1024
    # Authentication to Kafka, for every client of the process (producer, consumers, admin, the CLI's).
    # PLAINTEXT (the embedded broker) by default; deploy/ uses SASL_PLAINTEXT (compose) or SASL_SSL
    # (Strimzi) with SCRAM-SHA-512 and one user per service, whose ACLs allow only its own topics.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    # CA bundle that signed the brokers' certificates (SSL, SASL_SSL); None: the system's trust store.
    kafka_ssl_cafile: Path | None = None

    # Consumers. The embedded broker holds a JoinGroup for about half the session timeout, so
    # tests use a short one; production keeps Kafka's usual values.
    kafka_session_timeout_ms: int = 10_000
    kafka_heartbeat_interval_ms: int = 3_000
    # How long the broker may hold a fetch that has no new records. The embedded broker does not answer
    # a held fetch when records arrive, so part of this is added to a hop on a quiet system (measured:
    # 500 ms → ~200 ms a hop, 100 → ~27 ms, 20 → ~4 ms); Apache Kafka answers at once (deploy/ sets 500).
    kafka_fetch_max_wait_ms: int = 100
    # Records per consumed batch (one transaction). A batch holds its service's event loop while it is
    # decoded and applied: at peak 200, 100 instead of 500 took the webhook ack p99 from 365 to 315 ms
    # for the same CPU (the first SMS came ~0.5 s later); at 50 the consumers fell behind.
    consumer_max_records: int = 100
    consumer_batch_timeout_ms: int = 20
    consumer_max_attempts: int = 4
    # How long a consumed event id is remembered to drop duplicates. A message can come back only while a
    # topic keeps it (7 days) or an outbox keeps it for re-publishing (outbox_retention_hours): longer.
    consumer_dedupe_retention_hours: float = 192.0
    consumer_backoff_base_s: float = 0.05
    consumer_backoff_max_s: float = 2.0
    # People's signed commands on Kafka (returnflow/commands.py): `occurred_at` at most this long before
    # the Kafka record's timestamp (a backlog consumed later is still accepted), at most the skew after it.
    command_freshness_s: float = 300.0
    command_clock_skew_s: float = 30.0

    # Outbox relay
    outbox_batch_size: int = 500
    outbox_poll_interval_s: float = 1.0
    outbox_retention_hours: float = 168.0
    outbox_broker_check_interval_s: float = 5.0

    # Ops gauges asked on a slow loop (Prometheus scrapes every 15 s): the consumer groups' lag as the broker
    # sees it (returnflow/group_lag.py) and the service's business backlogs (returnflow/backlogs.py).
    consumer_group_lag_interval_s: float = 15.0
    backlog_interval_s: float = 15.0

    db_pool_min: int = 2
    db_pool_max: int = 10

    # Webhook secrets: JSON map of source -> list of active secrets (two during a rotation).
    webhook_secrets: dict[str, list[SecretStr]] = Field(
        default_factory=lambda: {k: [SecretStr(s) for s in v] for k, v in DEV_WEBHOOK_SECRETS.items()}
    )
    webhook_tolerance_s: int = 300
    # Who may read (GET a return, a timeline, a report, the audit log, a parcel, the SMS, a ledger): JSON map
    # of holder -> {"token", "role"}, role one of ops (reads everything), agent, auditor, warehouse. Kept as
    # sha256 digests. Each service also accepts its own people: refunds' roster (as agents, on refunds),
    # audit's people (as auditors, on audit), warehouse devices (as warehouse, on the warehouse).
    read_tokens: dict[str, ReadToken] = Field(default_factory=dict)
    webhook_max_body_bytes: int = 1024 * 1024

    # Per-shop settings (returnflow/shops.py): a YAML file every service reads and re-reads when it
    # changes (checked every shops_reload_interval_s); shops not listed keep the environment's values.
    shops_file: Path | None = None
    shops_reload_interval_s: float = 2.0

    # Tracing (returnflow/tracing.py): OpenTelemetry spans from the webhook to the refund and the SMS, the W3C
    # traceparent carried through the outbox and Kafka headers. Head sampling: a root trace is recorded with
    # this probability (a ratio of its trace id, so every process agrees), a continued one as its parent was.
    # `trace_enabled=false` switches tracing off entirely (no traceparent; correlation ids random again).
    trace_enabled: bool = True
    trace_sample_rate: float = Field(0.01, ge=0.0, le=1.0)
    # Where recorded spans go: `otlp` (OTLP/HTTP to trace_otlp_endpoint, e.g. http://collector:4318/v1/traces;
    # unset: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or localhost), `file` (JSON lines, one file per process,
    # under trace_dir, default <data_dir>/traces: what `returnflow trace` reads; `returnflow up` uses it), none.
    trace_exporter: Literal["none", "otlp", "file"] = "none"
    trace_otlp_endpoint: str | None = None
    trace_dir: Path | None = None
    trace_export_delay_ms: int = 1000

    log_format: str = "auto"  # auto | json | console
    # What this process of a service runs (RETURNFLOW_ROLE): everything (`all`), or one half of a service
    # split in two processes — `web` (its HTTP routes, workers and relay) and `consumers` (its consumer
    # groups and relay, with the ops endpoints only). `returnflow up` splits a service whose settings ask for
    # it (`consumers_apart`), so a consumer's batches cannot hold up the webhooks the other process acks.
    role: Literal["all", "web", "consumers"] = "all"
    log_level: str = "INFO"

    @property
    def serves(self) -> bool:
        """This process runs the service's routes, workers and the outbox's LISTENing relay (role all or web)."""
        return self.role != "consumers"

    @property
    def consumes(self) -> bool:
        """This process runs the service's consumer groups (role all or consumers)."""
        return self.role != "web"

    def secrets_for(self, source: str) -> list[bytes]:
        return [s.get_secret_value().encode() for s in self.webhook_secrets.get(source, [])]


class ServiceSettings(Loadable):
    """A service's own settings. Each service subclasses it in `services/<name>/settings.py` with
    `env_prefix="RETURNFLOW_<NAME>_"` and its default port; the runtime's `Settings` hold the rest."""

    model_config = SettingsConfigDict(extra="ignore")

    port: int = 0
    # Worker processes (uvicorn workers sharing the port). More than one only pays where the host has
    # cores to spare: with the whole stack on 2 cores a second returns worker added no throughput and
    # raised the webhook ack p99 (bench/surge.py); production scales by replicas.
    workers: int = 1
    # Run the service's consumer groups in a process of their own (role `consumers`), beside the one serving
    # its HTTP routes (role `web`). Measured for the returns service (issue 17): its timeline consumer reads
    # every lifecycle topic, and in the same event loop it took the webhook ack p99 at 41 returns/s from
    # 57 to 158 ms. Where the process would be idle (a service with little to consume), one is cheaper.
    consumers_apart: bool = False
    # The consumers process's port (its /healthz, /readyz, /idlez and /metrics); 0: any free port.
    consumers_port: int = 0
    # When the broker answers the service's consumer fetches: once `consumer_fetch_min_bytes` have gathered, or
    # after `consumer_fetch_max_wait_ms` (None: the runtime's kafka_fetch_max_wait_ms). A consumer whose readers
    # can wait a fraction of a second (a timeline, SMS) gathers: fewer, larger batches, each paying its fetch,
    # transaction and offset commit once (issue 17: at half capacity most batches held a record or two).
    consumer_fetch_min_bytes: int = 1
    consumer_fetch_max_wait_ms: int | None = None
    # How long the service's outbox relay lets rows gather after a wake-up before it claims them: one claim,
    # produce and mark transaction for several writes. 0 (publish at once) on the money path.
    relay_gather_ms: int = Field(default=0, ge=0, le=1000)

    def fetch_options(self, runtime: Settings) -> dict[str, int]:
        """The fetch settings of this service's consumer groups (aiokafka's keyword arguments)."""
        return {
            "fetch_min_bytes": self.consumer_fetch_min_bytes,
            "fetch_max_wait_ms": self.consumer_fetch_max_wait_ms or runtime.kafka_fetch_max_wait_ms,
        }


def _dev_secret_paths(value: Any, path: str) -> list[str]:
    if isinstance(value, SecretStr):
        return [path] if value.get_secret_value().startswith(DEV_PREFIX) else []
    if isinstance(value, BaseModel):
        return [p for k in type(value).model_fields for p in _dev_secret_paths(getattr(value, k), f"{path}.{k}")]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _dev_secret_paths(v, f"{path}.{k}")]
    if isinstance(value, list | tuple):
        return [p for i, v in enumerate(value) for p in _dev_secret_paths(v, f"{path}.{i}")]
    return []


def development_secrets(settings: BaseSettings) -> list[str]:
    """The settings (as their environment variable, with the path inside a JSON value) that hold a
    development secret."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    return [
        f"{prefix}{name.upper()}" + (f" ({path.partition('.')[2]})" if "." in path else "")
        for name in type(settings).model_fields
        for path in _dev_secret_paths(getattr(settings, name), name)
    ]


def refuse_development_secrets(settings: Settings, *more: BaseSettings) -> None:
    """Outside the local development stack, refuse to start on a development secret, in one line."""
    if settings.dev_stack:
        return
    found = [s for obj in (settings, *more) for s in development_secrets(obj)]
    if found:
        raise SystemExit(
            f"returnflow: refusing to start with development secrets outside the local stack: {', '.join(found)} "
            "(set your own; development secrets start with 'dev-')"
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.load()
