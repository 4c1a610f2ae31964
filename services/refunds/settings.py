"""refunds service settings: environment variables with the prefix RETURNFLOW_REFUNDS_."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from returnflow.settings import ServiceSettings


class RefundsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RETURNFLOW_REFUNDS_", extra="ignore")

    port: int = 8083

    # Authority preset (tiered | full_trust | custom). `custom` reads authority_limits:
    # currency -> role -> cumulative limit per return in minor units (null = unlimited).
    authority_preset: Literal["tiered", "full_trust", "custom"] = "tiered"
    authority_limits: dict[str, dict[str, int | None]] = Field(default_factory=dict)
    # Early refund on the first moving carrier scan (return_and_refund only): on/off, the largest
    # amount per currency refunded before the goods arrive, and how many clawbacks a customer may have
    # had in the lookback window and still get one. An optional return window (days from request to
    # the parcel moving) sends a late parcel to a person instead of refunding automatically.
    early_refund: bool = True
    early_refund_cap: dict[str, int] = Field(default_factory=lambda: {"CNY": 50_000})
    early_refund_max_clawbacks: int = 0
    clawback_lookback_days: int = 90
    return_window_days: int | None = None
    # An exchange's replacement ships at the parcel's first moving scan (exchange.replacement_released),
    # under the early refund's cap, clawback gate and return window; off: after the goods are received.
    # A shop's `exchanges.ship_at_first_scan` in the shops file overrides it.
    exchange_ship_at_first_scan: bool = False
    # Refund provider. `simulated` is a local HTTP PSP; `returnflow up` starts it and sets the URL.
    # `stripe`: the Refunds API with stripe_api_key (a secret or restricted key with refund rights);
    # stripe_webhook_secret (whsec_…) verifies POST /v1/webhooks/stripe/refunds; stripe_base_url may
    # point at the local server (services/refunds/dev/stripe_server.py).
    gateway: Literal["simulated", "stripe", "alipay", "shopify"] = "simulated"
    stripe_api_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_base_url: str = "https://api.stripe.com"
    stripe_webhook_tolerance_s: int = 300
    stripe_local: bool = False  # development: `returnflow up` runs the local Stripe and points stripe_base_url at it
    # `alipay`: alipay.trade.refund with the app's RSA2 private key (PEM or the console's base64 body);
    # Alipay's public key verifies its answers; alipay_gateway_url may point at the local server
    # (services/refunds/dev/alipay_server.py).
    alipay_app_id: str | None = None
    alipay_app_private_key: SecretStr | None = None
    alipay_public_key: str | None = None
    alipay_gateway_url: str = "https://openapi.alipay.com/gateway.do"
    # `shopify`: refundCreate through the shop's Admin GraphQL endpoint
    # (https://<shop>.myshopify.com/admin/api/2026-01/graphql.json; 2026-01 or later for @idempotent) with an
    # Admin API access token holding read_orders and write_orders; the URL may point at the local server
    # (services/refunds/dev/shopify_admin.py). shopify_notify: Shopify also emails the customer the refund.
    shopify_admin_url: str | None = None
    shopify_access_token: SecretStr | None = None
    shopify_notify: bool = False
    shopify_local: bool = False  # development: `returnflow up` runs the local Shopify, shopify_admin_url set to it
    gateway_url: str | None = None
    gateway_api_key: SecretStr | None = None  # sent as a bearer token; `returnflow up` sets the simulator's
    gateway_timeout_s: float = 5.0
    gateway_attempts: int = 3
    gateway_backoff_s: float = 0.2
    payment_concurrency: int = 64
    payment_batch: int = 200
    payment_lease_s: float = 60.0
    # A payment whose outcome stayed unknown through a series of attempts is asked again after this,
    # doubling (jittered) up to payment_retry_max_s.
    payment_retry_base_s: float = 0.8
    payment_retry_max_s: float = 300.0
    payment_poll_s: float = 1.0
    gateway_sim_port: int = 0  # 0: `returnflow up` picks a free loopback port
