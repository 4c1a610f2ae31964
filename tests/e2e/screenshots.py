"""`make screenshots`: the customer's page in its three locales on a 360 px phone, written to
docs/screenshots/ (the README shows them). Starts `returnflow up` in a temporary directory; zh-CN shows
a parcel on its way, en the tracking form, es a refund-only request."""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

from tests.e2e.customer_support import PHONE, browser, courier_scan, customer_env, file_return, sms_link
from tests.e2e.test_up import start, stop, wait_ready


async def main(out: Path) -> None:
    root = Path(tempfile.mkdtemp(prefix="returnflow-screenshots-"))
    env = customer_env(root / "data")
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
    finally:
        stop(proc)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots")
    target.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(target))
