"""returns service settings: environment variables with the prefix RETURNFLOW_RETURNS_."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from returnflow.settings import ServiceSettings


class ReturnsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RETURNFLOW_RETURNS_", extra="ignore")

    port: int = 8081
    # The timeline consumer in its own process (ServiceSettings.consumers_apart): intake answers faster.
    consumers_apart: bool = True
    # The timeline consumer gathers (ServiceSettings.consumer_fetch_*): its readers (the customer's page, the
    # workbench) see a step within a second; it reads every lifecycle topic, 10 of a lifecycle's 24 hops.
    consumer_fetch_min_bytes: int = 64 * 1024
    consumer_fetch_max_wait_ms: int | None = 300

    # Intake group commit: webhooks accepted in one transaction (RETURNFLOW_RETURNS_INTAKE_BATCH_MAX, ...).
    intake_batch_max: int = 200
    intake_batch_wait_ms: float = 2.0

    # The customer's page (services/returns/customer.py). A link stops working this long after its return
    # closed (refund paid, rejected, cancelled, an exchange checked), or when revoked.
    link_ttl_days_after_close: float = 90.0
    # The shop's name on the page, by shop id (the same map as RETURNFLOW_NOTIFY_SHOP_NAMES); else the id.
    shop_names: dict[str, str] = Field(default_factory=lambda: {"demo-shop": "Demo Shop"})
    # Self-service tracking: at most this many submissions per return within the window (valid or not).
    tracking_attempts: int = 5
    tracking_window_s: float = 3600.0
    # The page reloads itself this often while something is still to happen (0: never); a reload shows
    # a new step as soon as the timeline has it.
    page_refresh_s: int = 20

    # Shopify's returns/request webhook reads its order through the Admin GraphQL API before it is accepted
    # (services/returns/shopify.py). Shopify waits 5 s for an answer: the read, with its retries and waits
    # for the rate limit, gets this much and the webhook answers 503 (Shopify delivers it again) after it.
    shopify_admin_budget_s: float = 4.0
    shopify_admin_attempt_timeout_s: float = 2.0
    # An order read is kept this long (a redelivery, or several returns of one order, read it once).
    shopify_order_cache_s: float = 60.0
