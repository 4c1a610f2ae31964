"""A customer with only the SMS in hand, in a real browser (Debian's chromium through Playwright) against
`returnflow up`: the link from the SMS file outbox opens their return in their language, they enter a
tracking number, a courier scan shows as a new step, and a tampered, expired or revoked link shows nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.customer_support import (
    PHONE,
    SHOP,
    browser,
    cancel,
    chromium_or_fail,
    courier_scan,
    customer_env,
    file_return,
    revoke,
    sms_link,
)
from tests.e2e.test_up import start, stop, wait_ready
from tests.kafkautil import read_topic, values

pytestmark = pytest.mark.e2e


async def test_a_customer_follows_their_return_from_the_sms_link(stack_root: Path):
    chromium_or_fail()
    # not under pytest's basetemp (0700 under /tmp/pytest-of-root at times): embedded PostgreSQL's initdb
    # runs as its own user and must reach the data directory
    data = stack_root / "data"  # removed after the test (tests/conftest.py)
    env = customer_env(data)
    env["RETURNFLOW_RETURNS_LINK_TTL_DAYS_AFTER_CLOSE"] = "0"  # a closed return's link expires at once
    proc = start(env)
    try:
        wait_ready(proc)
        returns = {loc: await file_return(env, loc) for loc in ("zh-CN", "en", "es")}
        cancelled_id, cancelled_body = await file_return(env, "es")
        links = {loc: sms_link(data, rid)[0] for loc, (rid, _) in returns.items()}

        async with browser() as b:
            page = await b.new_page(viewport=PHONE, locale="en-US")

            # each customer's page speaks their language, in the shop's name, with the first step done
            for loc, heading, step in (("zh-CN", "您的退货", "已申请"), ("es", "Tu devolución", "Solicitada")):
                r = await page.goto(links[loc])
                assert r is not None and r.status == 200
                assert await page.get_attribute("html", "lang") == loc
                assert await page.text_content("h1") == heading
                assert await page.text_content(".shop") == SHOP
                assert step in (await page.text_content("ol.steps li.done") or "")
                assert "+86" not in await page.content() and returns[loc][0] not in await page.content()

            r = await page.goto(links["en"])
            assert r is not None and r.status == 200
            order_id = returns["en"][1]["order_id"]
            assert order_id in (await page.text_content("header") or "")
            assert "Pack the items" in (await page.text_content(".next") or "")
            assert await page.locator("ol.steps li.done").count() == 1
            # the inline style is allowed by the page's CSP (by hash); no horizontal scrolling on a 360 px phone
            style = "getComputedStyle(document.querySelector('.next')).borderLeftWidth"
            assert await page.evaluate(style) == "4px"
            assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
            assert "<script" not in await page.content()

            # the form and the steps work with JavaScript off (a plain form, post/redirect/get, a reload)
            page = await b.new_page(viewport=PHONE, locale="en-US", java_script_enabled=False)
            r = await page.goto(links["en"])
            assert r is not None and r.status == 200
            # a wrong tracking number is named next to its field, the form keeps what was typed
            await page.select_option("#carrier", "sf")
            await page.fill("#tracking_no", "12")
            await page.click("button[type=submit]")
            assert "6 to 40 letters and digits" in (await page.text_content("#tracking-err") or "")
            assert await page.get_attribute("#tracking_no", "aria-invalid") == "true"

            await page.fill("#tracking_no", "sf 1400 2233 9981")
            await page.click("button[type=submit]")
            await page.wait_for_selector("p.notice")
            assert "we have your tracking number" in (await page.text_content("p.notice") or "")
            assert "SF140022339981" in await page.content()
            assert await page.locator("form").count() == 0  # entered once

            # the courier's first scan becomes the "on its way" step within 2 s (reload)
            await courier_scan(env, "SF140022339981")
            scanned = time.monotonic()
            deadline = scanned + 10
            while True:
                await page.reload()
                done = await page.locator("ol.steps li.done").all_text_contents()
                if any("Parcel on its way" in d for d in done):
                    break
                assert time.monotonic() < deadline, done
                await page.wait_for_timeout(100)
            shown_after = time.monotonic() - scanned
            print(f"new step shown {shown_after:.2f}s after the courier scan")
            assert shown_after < 2.0
            # the refunds service may refund at once on a moving scan (early refund): either is right
            nxt = await page.text_content(".next") or ""
            assert "on its way to us" in nxt or "your refund has been paid" in nxt, nxt

            # a tampered link: 404 and the plain page, nothing of any return
            tampered = links["en"][:-1] + ("A" if links["en"][-1] != "A" else "B")
            r = await page.goto(tampered)
            assert r is not None and r.status == 404
            assert await page.text_content("h1") == "This link is no longer valid"
            assert order_id not in await page.content()

            # an expired link (its return closed; the TTL is 0 here): 410, in the customer's language
            cancelled_link = sms_link(data, cancelled_id)[0]
            await cancel(env, cancelled_body)
            deadline = time.monotonic() + 10
            while (r := await page.goto(cancelled_link)) is not None and r.status != 410:
                assert time.monotonic() < deadline
                await page.wait_for_timeout(100)
            assert await page.get_attribute("html", "lang") == "es"
            assert await page.text_content("h1") == "Este enlace ya no es válido"

            # a revoked link (a customer reported a forwarded text; an ops person revoked it): 410, their language
            revoked = await revoke(env, returns["zh-CN"][0])
            assert revoked["revoked_by"] == "ops-dev" and revoked["already_revoked"] is False
            r = await page.goto(links["zh-CN"])
            assert r is not None and r.status == 410
            assert await page.get_attribute("html", "lang") == "zh-CN"
            assert await page.text_content("h1") == "此链接已失效"
            assert returns["zh-CN"][1]["order_id"] not in await page.content()

        # the page's registration is the platform's event: return.tracking_registered on its topic
        bootstrap = f"127.0.0.1:{env['RETURNFLOW_EMBEDDED_KAFKA_PORT']}"
        records = await read_topic(bootstrap, "returns.tracking-registered", expect=1, timeout_s=15)
        [event] = values(records)
        assert event["type"] == "return.tracking_registered" and event["return_id"] == returns["en"][0]
        assert event["tracking_no"] == "SF140022339981" and event["carrier"] == "sf"
    finally:
        out = stop(proc)
    assert proc.returncode == 0, out
