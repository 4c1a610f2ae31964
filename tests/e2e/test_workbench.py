"""The after-sales team in real browsers (Debian's chromium through Playwright) against one `returnflow up`:
an agent finds a return, grants within their authority and sees a grant above it escalated to a
supervisor; the supervisor approves that escalation while an older one (a manager's) stays open, and a
second browser's queue drops it within 2 s; a warehouse clerk receives the parcel with the keyboard only;
a returns-team member's blind count differs, shows the discrepancy, and resolves it. A form without its
CSRF token is refused, and another role's page is a 403."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page

from tests.e2e.customer_support import browser, chromium_or_fail
from tests.e2e.test_up import DEV_READ, base, start, stop, wait_ready
from tests.e2e.workbench_support import DESK, file_parcel_return, seed_roster, sign_in, wb, workbench_env

pytestmark = pytest.mark.e2e


async def on_page(page: Page, selector: str, timeout_ms: float = 15_000) -> None:
    """The element is on the page. A queue page reloads itself every second: `locator.count()` there has no
    timeout and, on a machine so loaded that a load takes longer than the reload interval, waited for a
    stable page forever (a 300 s test timeout in a soak run); this wait ends, either way."""
    await page.wait_for_selector(selector, state="attached", timeout=timeout_ms)


async def test_an_after_sales_team_works_from_the_browser(stack_root: Path):
    chromium_or_fail()
    data = stack_root / "data"  # removed after the test (tests/conftest.py)
    env = workbench_env(data)
    proc = start(env)
    try:
        wait_ready(proc)
        seed_roster(env)
        rid, tracking = await file_parcel_return(env)

        async with browser() as b:
            agent_ctx = await b.new_context(viewport=DESK, locale="en-US")
            agent = await agent_ctx.new_page()
            await sign_in(agent, env, "agent")
            assert agent.url.endswith("/queue")
            cookie = next(c for c in await agent_ctx.cookies() if c["name"] == "wb_session")
            assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"

            # finds the return by its tracking number (search box), sees their authority
            await agent.fill("header input[name=q]", tracking)
            async with agent.expect_navigation():
                await agent.press("header input[name=q]", "Enter")
            assert agent.url.endswith(f"/returns/{rid}")
            deadline = time.monotonic() + 15
            while "CN¥20.00" not in (await agent.text_content("#authority") or ""):  # the ledger knows the return
                assert time.monotonic() < deadline
                await agent.reload()
            assert "You can grant up to CN¥20.00 on this return; CN¥0.00 already granted." in (
                await agent.text_content("#authority") or ""
            )

            # a bad amount is named next to its field
            await agent.fill("#amount", "1.234")
            await agent.click("#grant")
            assert "at most 2 decimals" in (await agent.text_content("#amount-err") or "")
            assert await agent.get_attribute("#amount", "aria-invalid") == "true"

            # within authority: done at once
            await agent.fill("#amount", "15.00")
            await agent.fill("#note", "lid cracked")
            await agent.click("#grant")
            assert (await agent.text_content("#outcome") or "").strip() == "Done: CN¥15.00 refunded."
            # the same form sent again (a double click, a reload) is the same decision: nothing granted twice
            assert "CN¥15.00 already granted" in (await agent.text_content("#authority") or "")

            # above it: escalated, to whom (an older one for a manager, then one for a supervisor)
            for amount, role in (("40.00", "manager"), ("10.00", "supervisor")):
                await agent.fill("#amount", amount)
                await agent.click("#grant")
                assert (
                    await agent.text_content("#outcome") or ""
                ).strip() == f"Above your authority: escalated to a {role}."
            rows = agent.locator("#escalations tr.escalation.open")
            assert await rows.count() == 2
            sup_escalation = await rows.nth(1).get_attribute("data-id")
            mgr_escalation = await rows.nth(0).get_attribute("data-id")

            # CSRF token missing -> refused; the agent's session on the warehouse's page -> 403
            async with httpx.AsyncClient(base_url=base(env, "workbench"), cookies={"wb_session": cookie["value"]}) as c:
                r = await c.post(f"/returns/{rid}/decisions", data={"action": "grant_free_refund", "amount": "1.00"})
                assert r.status_code == 403 and "did not come from this page" in r.text
                r = await c.post(f"/returns/{rid}/decisions", data={"csrf": "forged", "action": "approve"})
                assert r.status_code == 403
            r = await agent.goto(wb(env, "/receive"))
            assert r is not None and r.status == 403

            # the agent watches the queue; the supervisor approves *their* escalation in another browser
            await agent.goto(wb(env, "/queue?kind=escalation"))
            await on_page(agent, f"tr.item[data-id='{sup_escalation}']")
            sup_ctx = await b.new_context(viewport=DESK, locale="zh-CN")
            sup = await sup_ctx.new_page()
            await sign_in(sup, env, "supervisor", lang="zh-CN", then=f"/returns/{rid}")
            assert await sup.get_attribute("html", "lang") == "zh-CN"
            await sup.click(f"tr.escalation[data-id='{sup_escalation}'] button.approve")
            assert "已完成" in (await sup.text_content("#outcome") or "")
            approved = time.monotonic()
            await agent.wait_for_selector(f"tr.item[data-id='{sup_escalation}']", state="detached", timeout=5000)
            seen_after = time.monotonic() - approved
            print(f"queue change seen by the second browser {seen_after:.2f}s after the approval")
            assert seen_after < 2.0
            await on_page(agent, f"tr.item[data-id='{mgr_escalation}']")  # the older one stays
            await agent.goto(wb(env, f"/returns/{rid}"))  # off the self-reloading queue page
            await sup.reload()
            assert await sup.locator(f"tr.escalation.open[data-id='{mgr_escalation}']").count() == 1
            assert "sup-sam" in (await sup.text_content(f"tr.escalation[data-id='{sup_escalation}'] .status") or "")

            # the supervisor's numbers count that approval (days to today); the CSV too; not for an agent
            await sup.goto(wb(env, "/team"))
            mine = sup.locator("#team tr.person[data-person='sup-sam']")
            assert (
                await mine.locator("td.decisions").text_content(),
                await mine.locator("td.resolved").text_content(),
            ) == ("1", "1")
            assert await sup.locator("#chart rect.bar").count() == 7
            got = await sup_ctx.request.get(wb(env, "/team.csv"))
            assert got.status == 200 and got.headers["content-disposition"].startswith("attachment; filename=")
            assert any(line.split(",")[1:3] == ["sup-sam", "1"] for line in (await got.text()).splitlines())
            async with httpx.AsyncClient(base_url=base(env, "workbench"), cookies={"wb_session": cookie["value"]}) as c:
                assert (await c.get("/team")).status_code == 403

            # the warehouse clerk receives the parcel with the keyboard only
            clerk_ctx = await b.new_context(viewport={"width": 480, "height": 800}, locale="en-US")
            clerk = await clerk_ctx.new_page()
            await sign_in(clerk, env, "warehouse")
            assert clerk.url.endswith("/receive"), await clerk.content()
            await clerk.wait_for_selector("#tracking:focus")
            await clerk.keyboard.type(tracking.lower())  # the tracking field has the focus (a scanner types)
            async with clerk.expect_navigation():
                await clerk.keyboard.press("Enter")
            await clerk.wait_for_selector("#qty_0:focus")  # the first line's quantity has the focus
            await clerk.keyboard.type("5")  # more than expected: the error is next to the field
            for key in ("Tab", "Tab", "d", "Tab", "0", "Tab", "m", "Tab", "Tab", "Enter"):
                await clerk.keyboard.press(key) if len(key) > 1 else await clerk.keyboard.type(key)
            await clerk.wait_for_selector("#qty_0-err")
            assert "at most 1 expected" in (await clerk.text_content("#qty_0-err") or "")
            await clerk.focus("#qty_0")
            await clerk.keyboard.press("Control+A")
            await clerk.keyboard.type("1")
            for key in ("Tab", "Tab", "Tab", "Tab", "Tab", "Tab", "Enter"):  # the rest kept what was typed
                await clerk.keyboard.press(key)
            await clerk.wait_for_selector("#saved")
            assert rid in (await clerk.text_content("#saved") or "")
            async with httpx.AsyncClient(base_url=base(env, "warehouse"), headers=DEV_READ) as c:
                receipt = (await c.get(f"/v1/warehouse/parcels/{rid}")).json()["receipt"]
            assert (receipt["device_id"], receipt["inspector_id"]) == ("wh-zhao", "wh-zhao")  # who received

            # the returns team's blind count: 2 destroyed where the warehouse destroyed 1
            rt_ctx = await b.new_context(viewport=DESK, locale="en-US")
            rt = await rt_ctx.new_page()
            await sign_in(rt, env, "returns_team")
            assert rt.url.endswith("/check")
            assert "SERUM" not in await rt.content()  # nothing of the warehouse's count before theirs
            await rt.fill("#return_id", rid)
            await rt.fill("#sku", "SERUM-30ML")
            await rt.select_option("#movement", "destroy")
            await rt.fill("#quantity", "2")
            await rt.click("#record")
            deadline = time.monotonic() + 20
            while "Discrepancy" not in (await rt.text_content("#result") or ""):
                assert time.monotonic() < deadline, await rt.text_content("#result")
                await rt.wait_for_timeout(300)
                await rt.reload()
            assert "Warehouse counted 1 (wh-zhao)" in (await rt.text_content("#warehouse-count") or "")
            # who attested a side may not resolve it (the dual check's two people): refused, and why
            await rt.fill("#note", "recounted")
            await rt.click("#resolve")
            assert "someone else must resolve it" in (await rt.text_content("#message") or "")
            # a second returns-team member resolves it from the return page; it leaves the queue
            rt2 = await (await b.new_context(viewport=DESK, locale="en-US")).new_page()
            await sign_in(rt2, env, "returns_team_2", then=f"/returns/{rid}")
            await rt2.fill("#audit tr.discrepancy.open input[name=note]", "recounted: one jar was the customer's own")
            await rt2.click("#audit tr.discrepancy.open button")
            assert (await rt2.text_content("#message") or "").strip() == "Resolved."
            r = await rt2.goto(wb(env, f"/returns/{rid}"))
            assert r is not None and r.status == 200
            assert await rt2.locator("#audit tr.discrepancy.resolved").count() == 1
            # gone from the queue within 2 s (the page shares one read of the services per 0.5 s)
            deadline = time.monotonic() + 2.0
            while True:
                with contextlib.suppress(PlaywrightError):  # the queue page's own 1 s reload may cut in
                    await rt2.goto(wb(env, "/queue?kind=discrepancy"))
                    await rt2.wait_for_selector("#empty", state="attached", timeout=300)
                    break
                assert time.monotonic() < deadline, "the resolved discrepancy is still in the queue after 2 s"
                await asyncio.sleep(0.1)

            # signing out ends the session: the old cookie opens nothing
            # (from a page that does not reload itself: the agent's queue page refreshes every second, and
            # a navigation of ours raced it once in CI — "interrupted by another navigation")
            leaving = await agent.context.new_page()
            await agent.close()
            await leaving.goto(wb(env, f"/returns/{rid}"))
            await leaving.click("#signout")
            async with httpx.AsyncClient(base_url=base(env, "workbench"), cookies={"wb_session": cookie["value"]}) as c:
                r = await c.get("/queue")
                assert r.status_code == 303 and r.headers["location"].startswith("/signin")
    finally:
        out = stop(proc)
    assert re.search(r"returnflow: stopped", out), out[-2000:]
