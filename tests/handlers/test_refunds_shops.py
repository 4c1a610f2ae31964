"""Per-shop refund policy and provider from the shops file (returnflow/shops.py), in the handler tier:
a shop's own early-refund cap and authority limits apply to its returns only, a changed file applies
from the next decision without a restart, and a shop's refunds are paid through its own provider (the
local Stripe) while other shops' go to the default (the simulated gateway)."""

from __future__ import annotations

import uuid
from pathlib import Path

from contracts.events import RefundBasis, RefundDecided, RefundEscalated, RefundIssued, ReturnRequested
from returnflow.settings import Settings
from returnflow.shops import Shops
from services.refunds import SPEC, handlers, repository
from services.refunds.dev import DEV_ROSTER
from services.refunds.dev.gateway_sim import serve_gateway
from services.refunds.dev.shopify_admin import serve_shopify
from services.refunds.dev.stripe_server import serve_stripe
from services.refunds.settings import RefundsSettings
from tests.handlers.harness import harness
from tests.handlers.test_refunds_handlers import NOWHERE, http_command, ledger, requested, scanned


def in_shop(shop_id: str, payment_reference: str | None = None) -> ReturnRequested:
    update = {"shop_id": shop_id, "return_id": uuid.uuid4(), "payment_reference": payment_reference}
    return requested().model_copy(update=update)


def shops_file(tmp_path: Path, text: str) -> Shops:
    path = tmp_path / "shops.yaml"
    path.write_text(text)
    return Shops.load(path)


async def test_a_shops_early_refund_cap_applies_to_its_returns_only_and_a_change_without_a_restart(
    handler_settings: Settings, tmp_path: Path
) -> None:
    shops = shops_file(tmp_path, "shops:\n  strict:\n    refunds: {early_refund: {cap: {CNY: 1000}}}\n")
    own = RefundsSettings(gateway_url=NOWHERE)
    async with harness(SPEC, handler_settings, own, shops) as h:
        other, strict = requested(), in_shop("strict")
        await h.apply("lifecycle", [other, strict, scanned(other.return_id), scanned(strict.return_id)])
        decided = {d.return_id: d for d in await h.published(RefundDecided)}
        assert decided[other.return_id].basis == RefundBasis.early_scan  # the environment's cap: 50,000
        assert strict.return_id not in decided  # the shop's cap: 1,000 < 4,000
        detail = await h.pool.fetchval(
            "SELECT detail FROM decisions WHERE cause = 'early_scan' AND return_id = $1", strict.return_id
        )
        assert "above the early-refund cap" in detail

        (tmp_path / "shops.yaml").write_text("shops:\n  strict:\n    refunds: {early_refund: {cap: {CNY: 9000}}}\n")
        assert shops.reload()
        later = in_shop("strict")
        await h.apply("lifecycle", [later, scanned(later.return_id)])
        assert later.return_id in {d.return_id for d in await h.published(RefundDecided)}


async def test_a_shops_authority_limits_decide_its_agents_grants(handler_settings: Settings, tmp_path: Path) -> None:
    shops = shops_file(
        tmp_path, "shops:\n  tight:\n    refunds: {authority: {preset: custom, limits: {CNY: {agent: 100}}}}\n"
    )
    async with harness(SPEC, handler_settings, RefundsSettings(gateway_url=NOWHERE), shops) as h:
        async with h.pool.acquire() as conn:
            await repository.seed_roster(conn, list(DEV_ROSTER))
        other, tight = requested(), in_shop("tight")
        await h.apply("lifecycle", [other, tight])
        granted = await handlers.decide(
            h.ctx, http_command(other.return_id, "grant_free_refund", "agent-amy", 500, "agent-amy:g1")
        )
        assert granted.status == 200 and [r["amount"] for r in await ledger(h, other.return_id)] == [500]
        over = await handlers.decide(
            h.ctx, http_command(tight.return_id, "grant_free_refund", "agent-amy", 500, "agent-amy:g2")
        )
        assert await ledger(h, tight.return_id) == []  # above the shop's agent limit of 100: to a supervisor
        assert tight.return_id in {e.return_id for e in await h.published(RefundEscalated)}, over


async def test_a_shops_refunds_are_paid_through_its_own_provider(handler_settings: Settings, tmp_path: Path) -> None:
    async with serve_stripe(api_key="sk_test_shop", auto_charge_amount=10**9) as stripe, serve_gateway() as sim:
        shops = shops_file(
            tmp_path,
            "shops:\n  on-stripe:\n    refunds:\n      provider: stripe\n"
            f"      stripe: {{api_key: sk_test_shop, base_url: '{stripe.url}'}}\n",
        )
        own = RefundsSettings(gateway_url=sim, gateway_timeout_s=0.5, gateway_backoff_s=0.01)
        async with harness(SPEC, handler_settings, own, shops) as h:
            other, paid_on_stripe = requested(), in_shop("on-stripe", "pi_shop_order")
            await h.apply(
                "lifecycle", [other, paid_on_stripe, scanned(other.return_id), scanned(paid_on_stripe.return_id)]
            )
            assert await handlers.pay_due_refunds(h.ctx) == 0
            issued = {e.return_id: e for e in await h.published(RefundIssued)}
            assert set(issued) == {other.return_id, paid_on_stripe.return_id}
            (at_stripe,) = stripe.state.refunds.values()  # the shop's refund, and only it, went to its Stripe
            assert (at_stripe["id"], at_stripe["amount"]) == (issued[paid_on_stripe.return_id].gateway_reference, 4000)
            assert at_stripe["payment_intent"] == "pi_shop_order"
            assert issued[other.return_id].gateway_reference != at_stripe["id"]
            assert (
                h.ctx.gateways.provider_of("on-stripe") == "stripe" and h.ctx.gateways.provider_of("x") == "simulated"
            )


async def test_a_shopify_shops_refunds_go_through_its_own_admin_api(handler_settings: Settings, tmp_path: Path) -> None:
    async with serve_shopify(access_token="shpat_shop", auto_order_amount=10**6) as shopify:
        base = shopify.url
        shops = shops_file(
            tmp_path,
            "shops:\n  on-shopify:\n    refunds: {provider: shopify}\n    platform:\n      kind: shopify\n"
            f"      shopify: {{domain: maple.myshopify.com, access_token: shpat_shop, api_base_url: '{base}'}}\n",
        )
        own = RefundsSettings(gateway_url=NOWHERE, gateway_timeout_s=2.0, gateway_backoff_s=0.01)
        async with harness(SPEC, handler_settings, own, shops) as h:
            ret = in_shop("on-shopify", "gid://shopify/Order/4242")
            await h.apply("lifecycle", [ret, scanned(ret.return_id)])
            assert await handlers.pay_due_refunds(h.ctx) == 0
            (issued,) = await h.published(RefundIssued)
            order = shopify.state.orders["gid://shopify/Order/4242"]
            (refund,) = order["refunds"]  # one refund, at this shop's Shopify
            assert issued.gateway_reference == refund["id"] and issued.amount == 4000
