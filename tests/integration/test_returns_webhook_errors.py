"""Signatures and validation at the returns webhook, over HTTP: clear errors, nothing half-accepted."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from services.returns import SPEC
from tests.readers import READ
from tests.webhooks import return_body, signed

URL = "/v1/webhooks/generic/returns"


@pytest.fixture
async def client(settings, service_runner):
    async with service_runner(SPEC, settings) as svc, httpx.AsyncClient(base_url=svc.base_url, headers=READ) as c:
        c.svc = svc  # type: ignore[attr-defined]
        yield c


async def count_returns(client) -> int:
    return await client.svc.runtime.pool.fetchval("SELECT count(*) FROM returns")


async def test_signature_cases(client):
    raw, h = signed(return_body())
    flipped = bytearray(raw)
    flipped[10] ^= 0x01
    cases = {
        "one byte changed": (bytes(flipped), h),
        "stale t": signed(return_body(), t=int(time.time()) - 301),  # only grows staler while it travels
        "future t": signed(return_body(), t=int(time.time()) + 900),  # stays outside 300 s on a slow machine
        "missing header": (raw, {k: v for k, v in h.items() if k != "X-Returnflow-Signature"}),
        "malformed header": (raw, {**h, "X-Returnflow-Signature": "v1=abc"}),
        "unknown secret": signed(return_body(), secret=b"not-a-secret"),
    }
    for name, (body, headers) in cases.items():
        r = await client.post(URL, content=body, headers=headers)
        assert r.status_code == 401, name
        assert r.json()["detail"], name
    assert await count_returns(client) == 0
    # rotation: both active secrets are accepted
    for secret in (b"test-secret-old", b"test-secret-new"):
        r = await client.post(URL, content=(s := signed(return_body(), secret=secret))[0], headers=s[1])
        assert r.status_code == 202, r.text
    assert await count_returns(client) == 2


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"paid_total": -1}, "paid_total"),
        ({"paid_total": 10.5}, "paid_total"),
        ({"kind": "swap"}, "kind"),
        ({"lines": [{"sku": "A", "qty": 0, "unit_price": 100, "reason": "x"}]}, "lines.0.qty"),
        ({"lines": [{"sku": "A", "qty": 1, "unit_price": -5, "reason": "x"}]}, "lines.0.unit_price"),
        ({"lines": [{"sku": "A", "qty": 3, "unit_price": 2000, "reason": "x"}]}, "lines"),
        ({"lines": []}, "lines"),
        ({"customer": {"id": "c", "phone": "13812345678"}}, "customer.phone"),
        ({"customer": {"id": "c", "phone": "+8613812345678", "timezone": "Mars/Base"}}, "customer.timezone"),
        ({"currency": "cny"}, "currency"),
        ({"requested_at": "2026-11-11T10:00:00"}, "requested_at"),
    ],
)
async def test_validation_names_the_field(client, change, field):
    raw, h = signed(return_body(**change))
    r = await client.post(URL, content=raw, headers=h)
    assert r.status_code == 422, r.text
    assert field in [f["field"] for f in r.json()["fields"]], r.json()
    assert await count_returns(client) == 0


async def test_missing_required_fields_are_each_named(client):
    raw, h = signed({"kind": "refund_only"})
    r = await client.post(URL, content=raw, headers=h)
    assert r.status_code == 422
    named = {f["field"] for f in r.json()["fields"]}
    assert {"platform_return_id", "order_id", "shop_id", "customer", "currency", "paid_total", "lines"} <= named


async def test_size_type_and_delivery_header(client):
    big = b'{"x": "' + b"a" * (1024 * 1024) + b'"}'
    raw, h = signed(big)
    assert (await client.post(URL, content=raw, headers=h)).status_code == 413
    raw, h = signed(b"platform_return_id=1")
    assert (await client.post(URL, content=raw, headers={**h, "content-type": "text/plain"})).status_code == 415
    raw, h = signed(b"{not json")
    assert (await client.post(URL, content=raw, headers=h)).status_code == 422
    raw, h = signed(return_body())
    del h["X-Returnflow-Delivery"]
    r = await client.post(URL, content=raw, headers=h)
    assert r.status_code == 400 and "X-Returnflow-Delivery" in r.json()["detail"]
    assert await count_returns(client) == 0


async def test_tracking_and_cancel_events(client):
    body = return_body()
    raw, h = signed(body)
    rid = (await client.post(URL, content=raw, headers=h)).json()["return_id"]
    ev_url = f"/v1/webhooks/generic/returns/{body['platform_return_id']}/events"
    raw, h = signed({"shop_id": "shop-1", "type": "tracking_registered", "tracking_no": "SF123", "carrier": "sf"})
    assert (await client.post(ev_url, content=raw, headers=h)).status_code == 202
    assert (await client.post(ev_url, content=raw, headers=h)).json()["duplicate"] is True
    raw, h = signed({"shop_id": "shop-1", "type": "tracking_registered"})
    r = await client.post(ev_url, content=raw, headers=h)
    assert r.status_code == 422
    raw, h = signed({"shop_id": "shop-1", "type": "cancelled", "reason": "changed my mind"})
    assert (await client.post(ev_url, content=raw, headers=h)).status_code == 202
    tl = (await client.get(f"/v1/returns/{rid}/timeline")).json()
    assert tl["status"] == "cancelled"
    assert [e["type"] for e in tl["entries"]] == ["return.requested", "return.tracking_registered", "return.cancelled"]
    raw, h = signed({"shop_id": "shop-1", "type": "cancelled"})
    missing = await client.post("/v1/webhooks/generic/returns/nope/events", content=raw, headers=h)
    assert missing.status_code == 404
    assert (await client.get(f"/v1/returns/{uuid.uuid4()}")).status_code == 404
    assert (await client.get("/v1/returns/not-a-uuid/timeline")).status_code == 404
