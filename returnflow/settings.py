"""Configuration from environment variables (prefix RETURNFLOW_)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class WarehouseDevice(BaseModel):
    """A registered warehouse scanner: the warehouse it belongs to and its bearer token."""

    warehouse_id: str
    token: SecretStr


# Development-only warehouse device so `make run` can post receipts; production registers its own.
DEV_WAREHOUSE_DEVICES: dict[str, dict[str, str]] = {
    "dock-1": {"warehouse_id": "WH-DEMO", "token": "dev-device-token-dock-1"},
}

SERVICES: tuple[str, ...] = ("returns", "warehouse", "refunds", "notify", "audit")
DEFAULT_PORTS: dict[str, int] = {
    "returns": 8081,
    "warehouse": 8082,
    "refunds": 8083,
    "notify": 8084,
    "audit": 8085,
}

# Development-only secrets so `make run` works out of the box; production sets its own.
DEV_WEBHOOK_SECRETS: dict[str, list[str]] = {
    "generic": ["dev-generic-secret"],
    "shopify": ["dev-shopify-secret"],
    "carriers": ["dev-carrier-secret"],
    "sms": ["dev-sms-secret"],
}
# Development-only returns-team people and their bearer tokens for the audit API.
DEV_AUDIT_TOKENS: dict[str, str] = {"rt-lin": "dev-audit-token-lin", "rt-ana": "dev-audit-token-ana"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RETURNFLOW_", extra="ignore")

    data_dir: Path = Path(".data")
    # External servers: when set, nothing embedded is started for that part.
    kafka_bootstrap: str | None = None
    database_url: SecretStr | None = None
    embedded_kafka_port: int = 19092

    host: str = "127.0.0.1"
    returns_port: int = DEFAULT_PORTS["returns"]
    warehouse_port: int = DEFAULT_PORTS["warehouse"]
    refunds_port: int = DEFAULT_PORTS["refunds"]
    notify_port: int = DEFAULT_PORTS["notify"]
    audit_port: int = DEFAULT_PORTS["audit"]
    public_base_url: str | None = None
    # Worker processes per service (uvicorn workers sharing the port). More than one only pays where
    # the host has cores to spare: with the whole stack on 2 cores a second returns worker added no
    # throughput and raised the webhook ack p99 (bench/surge.py); production scales by replicas.
    returns_workers: int = 1
    warehouse_workers: int = 1
    refunds_workers: int = 1
    notify_workers: int = 1
    audit_workers: int = 1

    # Kafka producer: idempotence is refused by the embedded broker; turn it on for Apache Kafka.
    kafka_enable_idempotence: bool = False
    # Replication of topics a service re-creates after the broker lost them (1 for the embedded broker).
    kafka_replication_factor: int = 1
    kafka_acks: str = "all"
    kafka_linger_ms: int = 2
    kafka_max_batch_size: int = 256 * 1024

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

    # Outbox relay
    outbox_batch_size: int = 500
    outbox_poll_interval_s: float = 1.0
    outbox_retention_hours: float = 168.0
    outbox_broker_check_interval_s: float = 5.0

    db_pool_min: int = 2
    db_pool_max: int = 10

    # Warehouse (warehouse-confirm): devices allowed to post receipts (JSON: id -> {warehouse_id, token}),
    # and the group commit of carrier scans and receipts.
    warehouse_devices: dict[str, WarehouseDevice] = Field(
        default_factory=lambda: {k: WarehouseDevice.model_validate(v) for k, v in DEV_WAREHOUSE_DEVICES.items()}
    )
    warehouse_batch_max: int = 200
    warehouse_batch_wait_ms: float = 2.0

    # Refunds: authority preset (tiered | full_trust | custom). `custom` reads refunds_authority_limits:
    # currency -> role -> cumulative limit per return in minor units (null = unlimited).
    refunds_authority_preset: Literal["tiered", "full_trust", "custom"] = "tiered"
    refunds_authority_limits: dict[str, dict[str, int | None]] = Field(default_factory=dict)
    # Early refund on the first moving carrier scan (return_and_refund only): on/off, the largest
    # amount per currency refunded before the goods arrive, and how many clawbacks a customer may have
    # had in the lookback window and still get one. An optional return window (days from request to
    # the parcel moving) sends a late parcel to a person instead of refunding automatically.
    refunds_early_refund: bool = True
    refunds_early_refund_cap: dict[str, int] = Field(default_factory=lambda: {"CNY": 50_000})
    refunds_early_refund_max_clawbacks: int = 0
    refunds_clawback_lookback_days: int = 90
    refunds_return_window_days: int | None = None
    # Payment gateway. `simulated` is a local HTTP PSP; `returnflow up` starts it and sets the URL.
    refunds_gateway: Literal["simulated"] = "simulated"
    refunds_gateway_url: str | None = None
    refunds_gateway_api_key: SecretStr = SecretStr("sk_test_returnflow_dev")
    refunds_gateway_timeout_s: float = 5.0
    refunds_gateway_attempts: int = 3
    refunds_gateway_backoff_s: float = 0.2
    refunds_payment_concurrency: int = 64
    refunds_payment_batch: int = 200
    refunds_payment_lease_s: float = 60.0
    refunds_payment_retry_max_s: float = 300.0
    refunds_payment_poll_s: float = 1.0
    gateway_sim_port: int = 0  # 0: `returnflow up` picks a free loopback port

    # Webhook secrets: JSON map of source -> list of active secrets (two during a rotation).
    webhook_secrets: dict[str, list[SecretStr]] = Field(
        default_factory=lambda: {k: [SecretStr(s) for s in v] for k, v in DEV_WEBHOOK_SECRETS.items()}
    )
    webhook_tolerance_s: int = 300
    webhook_max_body_bytes: int = 1024 * 1024

    # Intake group commit
    intake_batch_max: int = 200
    intake_batch_wait_ms: float = 2.0

    # Audit (dual-check inventory log). Both sides of a movement must be attested within the deadline
    # of each other; a side is declared missing only after it has also been held `audit_settle_s` (so a
    # counterpart queued behind it after downtime can still arrive); an attestation for a return not
    # yet seen waits `audit_unknown_return_grace_s` for its return.requested.
    audit_check_deadline_s: float = 86_400.0
    audit_settle_s: float = 60.0
    audit_unknown_return_grace_s: float = 600.0
    audit_sweep_interval_s: float = 15.0
    audit_sweep_batch: int = 500
    audit_checks_batch_max: int = 100
    # person id -> bearer token: who may post returns-team checks and resolve discrepancies.
    audit_tokens: dict[str, SecretStr] = Field(
        default_factory=lambda: {k: SecretStr(v) for k, v in DEV_AUDIT_TOKENS.items()}
    )

    # Notify (SMS follow-ups). Provider: file (JSON lines under the data dir), twilio or aliyun.
    notify_provider: str = "file"
    notify_sms_file: Path | None = None  # default <data_dir>/sms/messages.jsonl
    notify_templates_dir: Path | None = None  # a merchant's copy of services/notify/templates
    notify_default_locale: str = "en"
    notify_default_timezone: str = "Asia/Shanghai"
    notify_shop_names: dict[str, str] = Field(default_factory=lambda: {"demo-shop": "Demo Shop"})
    notify_reminder_intervals_s: list[float] = Field(default_factory=lambda: [86_400.0, 259_200.0, 604_800.0])
    notify_reminder_stale_s: float = 43_200.0  # a reminder this late (service down) is skipped
    notify_quiet_start_hour: int = 21
    notify_quiet_end_hour: int = 8
    notify_daily_cap: int = 5  # messages per number per local day
    notify_sender_rate_per_s: float = 10.0
    notify_sender_burst: int = 1
    notify_poll_interval_s: float = 1.0
    notify_claim_batch: int = 50
    notify_send_concurrency: int = 8
    notify_send_lease_s: float = 120.0
    notify_send_max_attempts: int = 6
    notify_retry_base_s: float = 2.0
    notify_retry_max_s: float = 300.0
    notify_http_timeout_s: float = 10.0
    notify_clock_offset_s: float = 0.0  # shifts the service's clock (demos and tests of quiet hours)
    notify_twilio_account_sid: str | None = None
    notify_twilio_auth_tokens: list[SecretStr] = Field(default_factory=list)  # two during a rotation
    notify_twilio_from: str | None = None
    notify_twilio_messaging_service_sid: str | None = None
    notify_twilio_base_url: str = "https://api.twilio.com"
    notify_aliyun_access_key_id: str | None = None
    notify_aliyun_access_key_secret: SecretStr | None = None
    notify_aliyun_sign_name: str | None = None
    # template name (requested, parcel_seen, received, under_review, refund_paid, reminder), optionally
    # "name:locale" -> Aliyun TemplateCode (SMS_123456789)
    notify_aliyun_template_codes: dict[str, str] = Field(default_factory=dict)
    notify_aliyun_endpoint: str = "https://dysmsapi.aliyuncs.com"
    notify_aliyun_region: str = "cn-hangzhou"

    log_format: str = "auto"  # auto | json | console
    log_level: str = "INFO"

    def port_for(self, service: str) -> int:
        return int(getattr(self, f"{service}_port"))

    def workers_for(self, service: str) -> int:
        return max(1, int(getattr(self, f"{service}_workers", 1)))

    def base_url_for(self, service: str) -> str:
        return f"http://{self.host}:{self.port_for(service)}"

    def secrets_for(self, source: str) -> list[bytes]:
        return [s.get_secret_value().encode() for s in self.webhook_secrets.get(source, [])]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
