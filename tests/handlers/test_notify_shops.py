"""notify with the shops file: a listed shop's SMS are signed with its name, sent from its own sender,
and a customer with no locale of their own gets the shop's; another shop keeps the environment's."""

from __future__ import annotations

from pathlib import Path

from returnflow.settings import Settings
from returnflow.shops import Shops
from services.notify import SPEC
from tests.handlers.harness import harness
from tests.handlers.test_notify_handlers import lines, notify, send_due
from tests.integration.notify_support import requested


async def test_a_listed_shop_signs_and_sends_its_own_sms(handler_settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "shops.yaml"
    path.write_text("shops:\n  shop-1: {name: Maple Outlet, sms: {sender: MAPLE}}\n")
    shops = Shops.load(path)
    listed = requested(locale="en", shop_name="Name the platform sent")
    other = requested(locale="en").model_copy(update={"shop_id": "shop-2"})
    async with harness(SPEC, handler_settings, notify(), shops) as h:
        await h.apply("lifecycle", [listed, other])
        await send_due(h)
        (mine,) = lines(h, listed.return_id)
        (theirs,) = lines(h, other.return_id)
        assert mine["text"].endswith("- Maple Outlet") and mine["from"] == "MAPLE"
        assert theirs["text"].endswith("- shop-2") and theirs["from"] is None  # not listed: the id, the default sender

        path.write_text("shops:\n  shop-1: {name: Maple & Sons}\n")  # changed while running
        assert shops.reload()
        again = requested(locale="en")
        await h.apply("lifecycle", [again])
        await send_due(h)
        (later,) = lines(h, again.return_id)
        assert later["text"].endswith("- Maple & Sons") and later["from"] is None
