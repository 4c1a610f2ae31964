"""Build and sign webhook requests the way a platform does."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from returnflow.signing import DELIVERY_HEADER, SIGNATURE_HEADER, sign

SECRET = b"test-secret-new"


def return_body(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "platform_return_id": f"pr-{uuid.uuid4().hex[:10]}",
        "order_id": "order-1",
        "shop_id": "shop-1",
        "kind": "return_and_refund",
        "customer": {"id": "c-1", "phone": "+8613812345678", "locale": "zh-CN", "timezone": "Asia/Shanghai"},
        "currency": "CNY",
        "paid_total": 5000,
        "lines": [{"sku": "SKU-1", "qty": 2, "unit_price": 2000, "reason": "size_too_small"}],
        "requested_by": {"type": "customer"},
        "requested_at": datetime.now(UTC).isoformat(),
    }
    body.update(over)
    return body


def signed(
    body: dict[str, Any] | bytes, secret: bytes = SECRET, delivery_id: str | None = None, t: int | None = None
) -> tuple[bytes, dict[str, str]]:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return raw, {
        "content-type": "application/json",
        SIGNATURE_HEADER: sign(secret, raw, t),
        DELIVERY_HEADER: delivery_id or str(uuid.uuid4()),
    }
