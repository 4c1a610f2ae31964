"""Refund providers (the `Gateway` interface in services/refunds/gateway.py): which one pays is the
setting `gateway` — `simulated` (the embedded default, services/refunds/dev/gateway_sim.py), `stripe`,
`alipay` or `shopify`."""

from __future__ import annotations

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
