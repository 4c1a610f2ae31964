"""`make screenshots`: the customer's page in its three locales on a 360 px phone, and the workbench's
screens (queue, return page, returns-team check, receiving), written to docs/screenshots/ (the README
shows them). Starts `returnflow up` in a temporary directory; zh-CN shows a parcel on its way, en the
tracking form, es a refund-only request."""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

from playwright.async_api import Browser

from tests.e2e.customer_support import PHONE, browser, courier_scan, file_return, sms_link
from tests.e2e.test_up import start, stop, wait_ready
from tests.e2e.workbench_support import DESK, file_parcel_return, seed_roster, sign_in, workbench_env


async def workbench_shots(env: dict[str, str], b: Browser, out: Path) -> None:
    """An agent's grant and escalations on a return, then each person's screen."""
    seed_roster(env)
    rid, tracking = await file_parcel_return(env)
    agent = await (await b.new_context(viewport=DESK, device_scale_factor=1, locale="en-US")).new_page()
    await sign_in(agent, env, "agent", then=f"/returns/{rid}")
    for _ in range(50):  # until the refunds service knows the return
        if "20.00" in (await agent.text_content("#authority") or ""):
            break
        await agent.wait_for_timeout(200)
        await agent.reload()
    for amount in ("15.00", "40.00", "10.00"):
        await agent.fill("#amount", amount)
        await agent.click("#grant")
    shots = [(agent, "workbench-return.png")]
    sup = await (await b.new_context(viewport=DESK, locale="zh-CN")).new_page()
    await sign_in(sup, env, "supervisor", lang="zh-CN", then="/queue")
    shots.append((sup, "workbench-queue-zh-CN.png"))
    clerk = await (await b.new_context(viewport={"width": 480, "height": 800}, locale="en-US")).new_page()
    await sign_in(clerk, env, "warehouse", then=f"/receive?tracking={tracking}")
    shots.append((clerk, "workbench-receiving.png"))
    rt = await (await b.new_context(viewport=DESK, locale="en-US")).new_page()
    await sign_in(rt, env, "returns_team", then=f"/check?return_id={rid}")
    shots.append((rt, "workbench-check.png"))
    for page, name in shots:
        await page.screenshot(path=str(out / name), full_page=True)
        print(f"wrote {out / name}")


async def main(out: Path) -> None:
    root = Path(tempfile.mkdtemp(prefix="returnflow-screenshots-"))
    env = workbench_env(root / "data")
    proc = start(env)
    try:
        wait_ready(proc)
        zh = await file_return(env, "zh-CN", tracking_no="SF1400223399")
        en = await file_return(env, "en")
        es = await file_return(env, "es", kind="refund_only")
        await courier_scan(env, "SF1400223399", "picked_up")
        async with browser() as b:
            for locale, (rid, _) in (("zh-CN", zh), ("en", en), ("es", es)):
                link = sms_link(root / "data", rid)[0]
                page = await b.new_page(viewport=PHONE, device_scale_factor=2)
                await page.goto(link)
                if locale == "zh-CN":
                    for _ in range(50):  # until the scan shows
                        if await page.locator("ol.steps li.done").count() > 1:
                            break
                        await page.wait_for_timeout(200)
                        await page.reload()
                path = out / f"page-{locale}.png"
                await page.screenshot(path=str(path), full_page=True)
                print(f"wrote {path}")
                await page.close()
            await workbench_shots(env, b, out)
    finally:
        stop(proc)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots")
    target.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(target))
