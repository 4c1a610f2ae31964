"""The customer's side of `returnflow up`, for the browser tests and `make screenshots`: start the
stack, file returns in three locales, read the links from the SMS file outbox, drive Debian's chromium."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from playwright.async_api import Browser, async_playwright

from apphost.registry import DEV_OPS_TOKEN
from returnflow.signing import SIGNATURE_HEADER, sign
from tests.e2e.test_up import base, stack_env
from tests.webhooks import return_body, signed

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHONE = {"width": 360, "height": 780}
CARRIER_SECRET = b"test-carrier-secret"
LINK = re.compile(r"https?://\S+/r/[A-Za-z0-9_-]{22}")
SHOP = "Lumen Beauty"
CUSTOMERS = {
    "zh-CN": {"locale": "zh-CN", "timezone": "Asia/Shanghai", "phone": "+8613812345678"},
    "en": {"locale": "en", "timezone": "America/New_York", "phone": "+12025550143"},
    "es": {"locale": "es-MX", "timezone": "America/Mexico_City", "phone": "+525512345678"},
}


def customer_env(data_dir: Path) -> dict[str, str]:
    env = stack_env(data_dir)
    env.update(
        {
            "RETURNFLOW_WEBHOOK_SECRETS": orjson.dumps(
                {"generic": ["test-secret-new"], "carriers": [CARRIER_SECRET.decode()]}
            ).decode(),
            "RETURNFLOW_RETURNS_WORKERS": "1",
            # texts go at any hour here (quiet hours are notify's tests' business)
            "RETURNFLOW_NOTIFY_QUIET_START_HOUR": "0",
            "RETURNFLOW_NOTIFY_QUIET_END_HOUR": "0",
            "RETURNFLOW_NOTIFY_SHOP_NAMES": orjson.dumps({"shop-1": SHOP}).decode(),
            "RETURNFLOW_RETURNS_SHOP_NAMES": orjson.dumps({"shop-1": SHOP}).decode(),
        }
    )
    return env


def chromium_or_fail() -> None:
    if not CHROMIUM.exists():
        raise AssertionError("browser tests need Debian's chromium: make browser (or apt-get install -y chromium)")


@asynccontextmanager
async def browser() -> AsyncIterator[Browser]:
    chromium_or_fail()
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


async def file_return(env: dict[str, str], locale: str, **over: Any) -> tuple[str, dict[str, Any]]:
    c = CUSTOMERS[locale]
    body = return_body(
        customer={"id": f"c-{uuid.uuid4().hex[:6]}", **c},
        order_id=f"#{uuid.uuid4().int % 10**6:06d}",
        lines=[
            {"sku": "SERUM-30ML", "qty": 1, "unit_price": 2000, "reason": "changed_mind"},
            {"sku": "CREAM-50ML", "qty": 1, "unit_price": 2500, "reason": "damaged"},
        ],
        **over,
    )
    raw, headers = signed(body)
    async with httpx.AsyncClient(base_url=base(env, "returns"), timeout=10) as client:
        r = await client.post("/v1/webhooks/generic/returns", content=raw, headers=headers)
    assert r.status_code == 202, r.text
    return r.json()["return_id"], body


def sms_link(data_dir: Path, return_id: str, step: str = "requested", timeout_s: float = 30) -> tuple[str, str]:
    """The link in the text this return's customer got for this step, and the text, from the file outbox."""
    outbox = data_dir / "sms" / "messages.jsonl"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if outbox.exists():
            for line in outbox.read_text().splitlines():
                sms = orjson.loads(line)
                if sms["return_id"] == return_id and sms["step"] == step:
                    found = LINK.search(sms["text"])
                    assert found, sms["text"]
                    return found.group(0), sms["text"]
        time.sleep(0.2)
    raise AssertionError(f"no {step} SMS for {return_id} in {outbox}")


async def courier_scan(env: dict[str, str], tracking_no: str, code: str = "picked_up") -> None:
    raw = orjson.dumps(
        {"tracking_no": tracking_no, "scan_code": code, "scanned_at": datetime.now(UTC).isoformat(), "location": "Hub"}
    )
    headers = {"content-type": "application/json", SIGNATURE_HEADER: sign(CARRIER_SECRET, raw)}
    async with httpx.AsyncClient(base_url=base(env, "warehouse"), timeout=10) as client:
        r = await client.post("/v1/webhooks/carriers/sf/scans", content=raw, headers=headers)
    assert r.status_code in (200, 202), r.text


async def cancel(env: dict[str, str], body: dict[str, Any]) -> None:
    raw, headers = signed({"shop_id": body["shop_id"], "type": "cancelled", "reason": "changed my mind"})
    path = f"/v1/webhooks/generic/returns/{body['platform_return_id']}/events"
    async with httpx.AsyncClient(base_url=base(env, "returns"), timeout=10) as client:
        r = await client.post(path, content=raw, headers=headers)
    assert r.status_code == 202, r.text


async def revoke(env: dict[str, str], return_id: str) -> dict[str, Any]:
    """Revoke a return's customer link as the development ops reader (what `returnflow link revoke` sends)."""
    async with httpx.AsyncClient(base_url=base(env, "returns"), timeout=10) as client:
        r = await client.post(
            f"/v1/returns/{return_id}/links/revocation", headers={"authorization": f"Bearer {DEV_OPS_TOKEN}"}
        )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body
