"""notify service settings: environment variables with the prefix RETURNFLOW_NOTIFY_."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from returnflow.settings import ServiceSettings


class NotifySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RETURNFLOW_NOTIFY_", extra="ignore")

    port: int = 8084
    # The lifecycle consumer gathers (ServiceSettings.consumer_fetch_*): a text may go a fraction of a second
    # later (first SMS target: 2 s), for fewer, larger batches.
    consumer_fetch_min_bytes: int = 64 * 1024
    consumer_fetch_max_wait_ms: int | None = 300
    # ... and so does its relay (sms.sent): at 41 returns/s the stack's relay transactions 5,666 -> 4,331 with
    # notify and audit gathering 100 ms (bench.surge --pg-stats).
    relay_gather_ms: int = 100

    # Notify (SMS follow-ups). Provider: file (JSON lines under the data dir), twilio or aliyun.
    provider: str = "file"
    sms_file: Path | None = None  # default <data_dir>/sms/messages.jsonl
    templates_dir: Path | None = None  # a merchant's copy of services/notify/templates
    default_locale: str = "en"
    default_timezone: str = "Asia/Shanghai"
    shop_names: dict[str, str] = Field(default_factory=lambda: {"demo-shop": "Demo Shop"})
    reminder_intervals_s: list[float] = Field(default_factory=lambda: [86_400.0, 259_200.0, 604_800.0])
    reminder_stale_s: float = 43_200.0  # a reminder this late (service down) is skipped
    quiet_start_hour: int = 21
    quiet_end_hour: int = 8
    daily_cap: int = 5  # messages per number per local day
    sender_rate_per_s: float = 10.0
    sender_burst: int = 1
    poll_interval_s: float = 1.0
    claim_batch: int = 50
    send_concurrency: int = 8
    send_lease_s: float = 120.0
    send_max_attempts: int = 6
    retry_base_s: float = 2.0
    retry_max_s: float = 300.0
    http_timeout_s: float = 10.0
    clock_offset_s: float = 0.0  # shifts the service's clock (demos and tests of quiet hours)
    twilio_account_sid: str | None = None
    twilio_auth_tokens: list[SecretStr] = Field(default_factory=list)  # two during a rotation
    twilio_from: str | None = None
    twilio_messaging_service_sid: str | None = None
    twilio_base_url: str = "https://api.twilio.com"
    aliyun_access_key_id: str | None = None
    aliyun_access_key_secret: SecretStr | None = None
    aliyun_sign_name: str | None = None
    # template name (requested, parcel_seen, received, under_review, refund_paid, replacement_delayed,
    # replacement_shipped, refund_instead, reminder), optionally "name:locale" -> Aliyun TemplateCode
    # (SMS_123456789)
    aliyun_template_codes: dict[str, str] = Field(default_factory=dict)
    aliyun_endpoint: str = "https://dysmsapi.aliyuncs.com"
    aliyun_region: str = "cn-hangzhou"

    # Merchant webhooks (Standard Webhooks; endpoints per shop in the shops file). An attempt is cut at
    # webhook_timeout_s; at most webhook_concurrency are under way; a refused delivery is retried with
    # jittered exponential backoff from webhook_retry_base_s up to webhook_retry_max_s between attempts
    # (30 s, 1 min, 2 min, ... then about hourly: some 30 attempts in 24 h) and failed for good once the next
    # attempt would fall more than webhook_give_up_after_s after it was recorded.
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    webhook_concurrency: int = Field(default=8, ge=1)
    webhook_retry_base_s: float = Field(default=30.0, gt=0)
    webhook_retry_max_s: float = Field(default=3600.0, gt=0)
    webhook_give_up_after_s: float = Field(default=86_400.0, gt=0)
    webhook_claim_batch: int = Field(default=50, ge=1)
    webhook_log_retention_s: float = Field(default=30 * 86_400.0, gt=0)  # delivered and failed ones, then deleted
