"""Shopify's returns webhooks as Shopify sends them: the documented returns/request payload, an order for
the local Admin API, and the headers Shopify signs a delivery with."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import uuid
from typing import Any

from services.returns.api import SHOPIFY_EXAMPLE

DOMAIN = "maple.myshopify.com"
SHOP_SECRET = b"shopify-maple-secret"  # the shop's own webhook secret (shops file)
GLOBAL_SECRET = b"shopify-secret"  # RETURNFLOW_WEBHOOK_SECRETS["shopify"] in tests/conftest.py
TOKEN = "shpat_local_maple"

# returns/request as Shopify's webhook reference documents it (the API's own example), two units returned
REQUEST: dict[str, Any] = copy.deepcopy(SHOPIFY_EXAMPLE)
REQUEST["return_line_items"][0]["quantity"] = 2

ORDER: dict[str, Any] = {
    "id": 450789469,
    "name": "#1001",
    "currency": "USD",
    "total": "59.90",
    "customer": {"id": 207119551, "phone": "+14155550123", "locale": "en"},
    "line_items": [
        {"id": 466157049, "sku": "TEE-S", "price": "19.95"},  # after discounts (list price 24.95)
        {"id": 518995019, "sku": "SOCKS", "price": "20.00"},
    ],
}


def request_payload(return_id: int, order_id: int = 450789469) -> dict[str, Any]:
    p = copy.deepcopy(REQUEST)
    p["id"], p["admin_graphql_api_id"] = return_id, f"gid://shopify/Return/{return_id}"
    p["order"] = {"id": order_id, "admin_graphql_api_id": f"gid://shopify/Order/{order_id}"}
    return p


def shopify_headers(
    body: bytes,
    topic: str = "returns/request",
    secret: bytes = SHOP_SECRET,
    domain: str = DOMAIN,
    webhook_id: str | None = None,
) -> dict[str, str]:
    """What Shopify sends: X-Shopify-Hmac-Sha256 = base64 HMAC-SHA256 of the raw body with the secret."""
    return {
        "content-type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": base64.b64encode(hmac.new(secret, body, hashlib.sha256).digest()).decode(),
        "X-Shopify-Shop-Domain": domain,
        "X-Shopify-Webhook-Id": webhook_id or str(uuid.uuid4()),
        "X-Shopify-API-Version": "2025-07",
    }
