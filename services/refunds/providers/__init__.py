"""Refund providers (the `Gateway` interface in services/refunds/gateway.py): which one pays is the
setting `gateway` — `simulated` (the embedded default, services/refunds/dev/gateway_sim.py), `stripe`,
`alipay` or `shopify` — or, for a shop listed in the shops file with `refunds.provider`, that shop's own
provider and credentials (`Gateways`; `shopify` pays through the shop's platform.shopify Admin API)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from returnflow.logging import get_logger
from returnflow.shops import Shop, Shops
from services.refunds.gateway import Gateway, HttpGateway
from services.refunds.providers.alipay import AlipayGateway
from services.refunds.providers.shopify import ShopifyGateway
from services.refunds.providers.stripe import StripeGateway
from services.refunds.settings import RefundsSettings


def build_gateway(s: RefundsSettings) -> Gateway:
    """The configured provider; a missing setting fails the start in one line naming its variable."""
    if s.gateway == "stripe":
        if s.stripe_api_key is None:
            raise RuntimeError(
                "refunds: gateway stripe needs RETURNFLOW_REFUNDS_STRIPE_API_KEY (sk_live_… / sk_test_…)"
            )
        return StripeGateway(
            s.stripe_base_url,
            s.stripe_api_key.get_secret_value(),
            s.stripe_webhook_secret.get_secret_value() if s.stripe_webhook_secret else None,
            s.stripe_webhook_tolerance_s,
            timeout_s=s.gateway_timeout_s,
            attempts=s.gateway_attempts,
            backoff_s=s.gateway_backoff_s,
            max_connections=s.payment_concurrency,
        )
    if s.gateway == "alipay":
        missing = [
            f"RETURNFLOW_REFUNDS_{name.upper()}"
            for name in ("alipay_app_id", "alipay_app_private_key", "alipay_public_key")
            if not getattr(s, name)
        ]
        if missing:
            raise RuntimeError(f"refunds: gateway alipay needs {', '.join(missing)}")
        assert s.alipay_app_id and s.alipay_app_private_key and s.alipay_public_key
        return AlipayGateway(
            s.alipay_gateway_url,
            s.alipay_app_id,
            s.alipay_app_private_key.get_secret_value(),
            s.alipay_public_key,
            timeout_s=s.gateway_timeout_s,
            attempts=s.gateway_attempts,
            backoff_s=s.gateway_backoff_s,
            max_connections=s.payment_concurrency,
        )
    if s.gateway == "shopify":
        missing = [
            f"RETURNFLOW_REFUNDS_{name.upper()}"
            for name in ("shopify_admin_url", "shopify_access_token")
            if not getattr(s, name)
        ]
        if missing:
            raise RuntimeError(f"refunds: gateway shopify needs {', '.join(missing)}")
        assert s.shopify_admin_url and s.shopify_access_token
        return ShopifyGateway(
            s.shopify_admin_url,
            s.shopify_access_token.get_secret_value(),
            timeout_s=s.gateway_timeout_s,
            attempts=s.gateway_attempts,
            backoff_s=s.gateway_backoff_s,
            max_connections=s.payment_concurrency,
            notify=s.shopify_notify,
        )
    if not s.gateway_url:
        raise RuntimeError(
            "refunds: RETURNFLOW_REFUNDS_GATEWAY_URL is not set "
            "(`returnflow up` starts the simulated gateway and sets it)"
        )
    return HttpGateway(
        s.gateway_url,
        s.gateway_api_key.get_secret_value() if s.gateway_api_key else None,
        timeout_s=s.gateway_timeout_s,
        attempts=s.gateway_attempts,
        backoff_s=s.gateway_backoff_s,
        max_connections=s.payment_concurrency,
    )


log = get_logger("refunds.providers")


def shop_settings(s: RefundsSettings, shop: Shop) -> RefundsSettings:
    """The environment's settings with the shop's provider and credentials in place of the default's."""
    r = shop.refunds
    update: dict[str, Any] = {"gateway": r.provider or s.gateway}
    if r.stripe is not None:
        update |= {
            "stripe_api_key": r.stripe.api_key,
            "stripe_webhook_secret": r.stripe.webhook_secret,
            "stripe_base_url": r.stripe.base_url,
        }
    if r.provider == "shopify" and (p := shop.platform.shopify) is not None:
        update |= {"shopify_admin_url": p.admin_url(), "shopify_access_token": p.access_token}
    if r.alipay is not None:
        update |= {
            "alipay_app_id": r.alipay.app_id,
            "alipay_app_private_key": r.alipay.app_private_key,
            "alipay_public_key": r.alipay.public_key,
            "alipay_gateway_url": r.alipay.gateway_url,
        }
    return s.model_copy(update=update)


def has_own_provider(shop: Shop | None) -> bool:
    r = shop.refunds if shop is not None else None
    return r is not None and (r.provider is not None or r.stripe is not None or r.alipay is not None)


@dataclass
class Gateways:
    """The default provider, and each shop's own (built when first needed, rebuilt after the shops file
    changed). A gateway replaced by a change is closed at the end, not mid-payment."""

    settings: RefundsSettings
    default: Gateway
    shops: Shops
    _built: dict[str, Gateway] = field(default_factory=dict)
    _retired: list[Gateway] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.shops.on_change.append(self.forget)

    def for_shop(self, shop_id: str | None) -> Gateway:
        shop = self.shops.get(shop_id)
        if shop_id is None or shop is None or not has_own_provider(shop):
            return self.default
        if (gateway := self._built.get(shop_id)) is None:
            gateway = self._built[shop_id] = build_gateway(shop_settings(self.settings, shop))
            log.info("refund provider built for shop", shop_id=shop_id, provider=shop.refunds.provider)
        return gateway

    def provider_of(self, shop_id: str | None) -> str:
        shop = self.shops.get(shop_id)
        return shop_settings(self.settings, shop).gateway if shop is not None else self.settings.gateway

    def forget(self, _shops: Mapping[str, Shop]) -> None:
        self._retired.extend(self._built.values())
        self._built.clear()

    async def close(self) -> None:
        for gateway in [self.default, *self._built.values(), *self._retired]:
            await gateway.close()
