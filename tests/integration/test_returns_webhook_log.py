"""One structured log line per webhook delivery (issue 12, finding 7): a merchant's rejected deliveries
used to show only as a counter. For a 401, a 422 and a 202, over HTTP: route, status, shop, delivery id,
reason and correlation id, and never a full phone number or a secret."""

from __future__ import annotations

import httpx
import pytest
import structlog
from structlog.testing import capture_logs

from returnflow import webhook_log
from services.returns import SPEC
from tests.webhooks import return_body, signed

URL = "/v1/webhooks/generic/returns"


@pytest.fixture
async def client(settings, service_runner, monkeypatch):
    # A fresh logger: one cached by an earlier test holds the processors of an earlier configure_logging,
    # which capture_logs does not reach.
    monkeypatch.setattr(webhook_log, "log", structlog.get_logger("returnflow.webhooks"))
    async with service_runner(SPEC, settings) as svc, httpx.AsyncClient(base_url=svc.base_url) as c:
        yield c


async def test_each_webhook_delivery_writes_one_line_saying_who_and_why(client):
    cases = {
        401: signed(return_body(shop_id="shop-sig"), secret=b"not-the-secret", delivery_id="d-401"),
        422: signed(return_body(shop_id="shop-bad", customer={"id": "c", "phone": "13812345678"}), delivery_id="d-422"),
        202: signed(return_body(shop_id="shop-ok"), delivery_id="d-202"),
    }
    lines = {}
    for status, (raw, headers) in cases.items():
        with capture_logs() as logs:
            r = await client.post(URL, content=raw, headers={**headers, "x-correlation-id": f"corr-{status}"})
        assert r.status_code == status, r.text
        webhook_lines = [e for e in logs if e.get("route") == URL]
        assert len(webhook_lines) == 1, logs
        lines[status] = webhook_lines[0]
    for status, shop in ((401, "shop-sig"), (422, "shop-bad"), (202, "shop-ok")):
        line = lines[status]
        assert (line["status"], line["shop"], line["delivery_id"]) == (status, shop, f"d-{status}")
        assert line["correlation_id"] == f"corr-{status}"
    assert lines[202]["event"] == "webhook accepted" and lines[202]["reason"] is None
    assert lines[401]["event"] == "webhook rejected" and lines[401]["log_level"] == "warning"
    assert "signature" in lines[401]["reason"]
    assert lines[422]["reason"].startswith("customer.phone: ")
    text = repr(lines)
    assert "13812345678" not in text and "not-the-secret" not in text
