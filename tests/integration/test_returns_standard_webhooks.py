"""The generic intake takes Standard Webhooks too (webhook-id, webhook-timestamp, webhook-signature), with the
same `webhook_secrets["generic"]` in whsec_ form or raw: signed by the `standardwebhooks` library or by ours it
is accepted, the webhook-id is the delivery id, and a bad one is a 401 naming the header."""

from __future__ import annotations

import base64
import time
import uuid
from datetime import UTC, datetime

import httpx
import orjson
import pytest
from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook

from returnflow.signing import WEBHOOK_SIGNATURE_HEADER, WEBHOOK_TIMESTAMP_HEADER, standard_headers
from services.returns import SPEC
from tests.readers import READ
from tests.webhooks import return_body, signed

URL = "/v1/webhooks/generic/returns"
WHSEC = "whsec_" + base64.b64encode(b"platform-key-for-standard-webhooks").decode()
RAW = "test-secret-new"  # the generic source's existing secret, used as it is written


def theirs(body: dict, secret: str = WHSEC, msg_id: str | None = None) -> tuple[bytes, dict[str, str]]:
    """Signed by the Standard Webhooks reference library, as a platform using it would."""
    raw = orjson.dumps(body)
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    now = datetime.fromtimestamp(int(time.time()), UTC)
    signature = Webhook(secret).sign(msg_id, now, raw.decode())
    return raw, {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }


@pytest.fixture
async def client(settings, service_runner):
    secrets = dict(settings.webhook_secrets)
    secrets["generic"] = [SecretStr(RAW), SecretStr(WHSEC)]
    s = settings.model_copy(update={"webhook_secrets": secrets})
    async with service_runner(SPEC, s) as svc, httpx.AsyncClient(base_url=svc.base_url, headers=READ) as c:
        c.svc = svc  # type: ignore[attr-defined]
        yield c


async def test_signed_either_way_is_accepted_and_the_webhook_id_is_the_delivery_id(client):
    body = return_body()
    raw, h = theirs(body)
    r = await client.post(URL, content=raw, headers=h)
    assert r.status_code == 202, r.text
    again = await client.post(URL, content=raw, headers=h)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert again.json()["return_id"] == r.json()["return_id"]

    # a raw secret (no whsec_ prefix) is the key as written; ours signs as theirs does
    raw, h = theirs(return_body(), secret=base64.b64encode(RAW.encode()).decode())
    assert (await client.post(URL, content=raw, headers=h)).status_code == 202
    raw = orjson.dumps(return_body())
    h = {"content-type": "application/json", **standard_headers(RAW.encode(), "msg_ours_1", raw)}
    assert (await client.post(URL, content=raw, headers=h)).status_code == 202

    # the returnflow scheme still works beside it
    raw, h = signed(return_body())
    assert (await client.post(URL, content=raw, headers=h)).status_code == 202

    # and the return's events (tracking, cancel) take it too
    ev_url = f"/v1/webhooks/generic/returns/{body['platform_return_id']}/events"
    raw, h = theirs({"shop_id": "shop-1", "type": "cancelled", "reason": "changed my mind"})
    assert (await client.post(ev_url, content=raw, headers=h)).status_code == 202


async def test_a_bad_standard_signature_is_a_401_naming_the_header(client):
    raw, h = theirs(return_body())
    flipped = bytearray(raw)
    flipped[5] ^= 0x01
    stale = str(int(time.time()) - 301)
    cases = {
        "one byte changed": (bytes(flipped), h, "webhook-signature does not match"),
        "unknown secret": (
            *theirs(return_body(), secret="whsec_" + base64.b64encode(b"nope").decode()),
            "webhook-signature does not match",
        ),
        "stale timestamp": (raw, {**h, WEBHOOK_TIMESTAMP_HEADER: stale}, "webhook-timestamp is more than 300s"),
        "no timestamp": (
            raw,
            {k: v for k, v in h.items() if k != WEBHOOK_TIMESTAMP_HEADER},
            "missing webhook-timestamp",
        ),
        "no signature": (
            raw,
            {k: v for k, v in h.items() if k != WEBHOOK_SIGNATURE_HEADER},
            "missing webhook-signature",
        ),
        "not base64": (raw, {**h, WEBHOOK_SIGNATURE_HEADER: "v1,%%%"}, "malformed webhook-signature"),
    }
    for name, (content, headers, message) in cases.items():
        r = await client.post(URL, content=content, headers=headers)
        assert r.status_code == 401, name
        assert message in r.json()["detail"], (name, r.json())
    assert await client.svc.runtime.pool.fetchval("SELECT count(*) FROM returns") == 0
