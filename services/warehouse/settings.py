"""warehouse service settings: environment variables with the prefix RETURNFLOW_WAREHOUSE_."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from returnflow.settings import ServiceSettings


class WarehouseDevice(BaseModel):
    """A registered warehouse scanner: the warehouse it belongs to and its bearer token."""

    warehouse_id: str
    token: SecretStr


class WarehouseSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RETURNFLOW_WAREHOUSE_", extra="ignore")

    port: int = 8082

    # Warehouse (warehouse-confirm): devices allowed to post receipts (JSON: id -> {warehouse_id, token}),
    # and the group commit of carrier scans and receipts.
    devices: dict[str, WarehouseDevice] = Field(default_factory=dict)
    # Warehouse staff, each with a personal token (JSON: person id -> {warehouse_id, token}): they post
    # receipts as a device does (the workbench's receiving screen), and the receipt records the person.
    staff: dict[str, WarehouseDevice] = Field(default_factory=dict)
    batch_max: int = 200
    batch_wait_ms: float = 2.0

    # Courier tracking feeds (docs/couriers.md). Each is off until its secret is set; a list so that a
    # secret can be rotated (the old one stays accepted until no push is signed with it any more).
    # Kuaidi100: the `salt` given with each subscription; a push is signed MD5(param + salt), uppercase.
    kuaidi100_salts: list[SecretStr] = Field(default_factory=list)
    # Subscribing each new tracking number with Kuaidi100 (POST {poll_url}), on when the key and the
    # callback URL are set: `key` is the account's 授权码, `callback_url` the public address of
    # /v1/webhooks/couriers/kuaidi100; the first salt is given with each subscription.
    kuaidi100_key: SecretStr | None = None
    kuaidi100_callback_url: str | None = None
    kuaidi100_poll_url: str = "https://poll.kuaidi100.com/poll"
    kuaidi100_timeout_s: float = 10.0
    kuaidi100_poll_s: float = 5.0  # the subscriber's poll when nothing wakes it
    kuaidi100_retry_s: float = 30.0  # a subscription not made is asked again after this, doubling to an hour
    # AfterShip Tracking: the webhook secret (aftership-hmac-sha256: base64 HMAC-SHA256 of the raw body).
    aftership_webhook_secrets: list[SecretStr] = Field(default_factory=list)

    @property
    def kuaidi100_subscribes(self) -> bool:
        return bool(self.kuaidi100_key and self.kuaidi100_callback_url and self.kuaidi100_salts)
