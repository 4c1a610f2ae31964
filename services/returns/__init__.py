"""The returns service: platform webhooks in, return-requested/cancelled events out, and each
return's status and timeline built from every lifecycle topic. Its SPEC is what the platform app runs."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter

from contracts.catalog import CATALOG
from returnflow.batching import GroupCommitter
from returnflow.service import ConsumerSpec, Runtime, ServiceSpec
from services.returns import api, customer, handlers
from services.returns.handlers import ReturnsContext
from services.returns.settings import ReturnsSettings
from services.returns.shopify import ShopifyAdmin

# Every lifecycle topic the catalog lists us as a consumer of (see contracts.catalog._with_timeline).
TIMELINE_TOPICS = [t.name for t in CATALOG if "returns" in t.consumers]


async def build_context(rt: Runtime, settings: ReturnsSettings) -> ReturnsContext:
    secret = rt.settings.customer_link_secret
    link_secret = secret.get_secret_value().encode() if secret is not None else None
    intake = GroupCommitter(
        rt.pool,
        handlers.intake_step(link_secret),
        max_size=settings.intake_batch_max,
        max_wait_s=settings.intake_batch_wait_ms / 1000,
    )
    shopify = ShopifyAdmin(
        budget_s=settings.shopify_admin_budget_s,
        attempt_timeout_s=settings.shopify_admin_attempt_timeout_s,
        cache_s=settings.shopify_order_cache_s,
    )
    return ReturnsContext(rt.pool, settings, rt.settings, intake, link_secret, rt.shops, shopify)


async def close_context(ctx: ReturnsContext) -> None:
    await ctx.intake.close()
    await ctx.shopify.close()


# The service's HTTP: the API (webhooks, returns, reports) and the customer's page.
router = APIRouter()
router.include_router(api.router)
router.include_router(customer.router)

SPEC: ServiceSpec[ReturnsContext] = ServiceSpec(
    name="returns",
    folder=Path(__file__).parent,
    description="Platform webhooks in; return events out; each return's status and timeline.",
    settings=ReturnsSettings,
    context=build_context,
    close=close_context,
    router=router,
    consumers=[ConsumerSpec("timeline", TIMELINE_TOPICS, apply=handlers.apply_timeline)],
    workers=[handlers.link_backfill],
)

__all__ = ["SPEC", "ReturnsContext", "ReturnsSettings"]
