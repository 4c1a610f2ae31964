"""An exchange's replacement released at the parcel's first moving scan, in the refunds service against a
real PostgreSQL: released once (exchange.replacement_released) for a shop whose exchanges ship at the first
scan, never for one that ships at receipt nor above the shop's early-refund cap, and a receipt short of
what was asked after a release is a clawback for a person."""

from __future__ import annotations

import uuid
from pathlib import Path

from contracts.events import ClawbackFlagged, RefundDecided, ReplacementReleased, ReturnKind, ReturnRequested
from returnflow.settings import Settings
from services.refunds import SPEC
from services.refunds.settings import RefundsSettings
from tests.handlers.harness import harness
from tests.handlers.test_refunds_handlers import NOWHERE, received, requested, scanned
from tests.handlers.test_refunds_shops import shops_file

SHOPS = """shops:
  early:
    exchanges: {ship_at_first_scan: true}
  early-but-small:
    exchanges: {ship_at_first_scan: true}
    refunds: {early_refund: {cap: {CNY: 1000}}}
"""


def exchange_in(shop_id: str) -> ReturnRequested:
    ask = requested(ReturnKind.exchange)  # 2 x SKU-1 at 20.00: goods worth 40.00
    return ask.model_copy(update={"shop_id": shop_id, "return_id": uuid.uuid4()})


async def decision(h, rid: uuid.UUID) -> tuple[str, str] | None:
    row = await h.pool.fetchrow(
        "SELECT outcome, detail FROM decisions WHERE return_id = $1 AND cause = 'early_replacement'", rid
    )
    return (row["outcome"], row["detail"]) if row else None


async def test_a_moving_scan_releases_the_replacement_once_in_a_shop_that_ships_at_the_first_scan(
    handler_settings: Settings, tmp_path: Path
) -> None:
    shops = shops_file(tmp_path, SHOPS)
    async with harness(SPEC, handler_settings, RefundsSettings(gateway_url=NOWHERE), shops) as h:
        early, at_receipt, small = exchange_in("early"), exchange_in("shop-1"), exchange_in("early-but-small")
        await h.apply("lifecycle", [early, at_receipt, small])
        await h.apply("lifecycle", [scanned(r.return_id) for r in (early, at_receipt, small)])
        await h.apply("lifecycle", [scanned(early.return_id, minutes=90)])  # a later scan, and a redelivery
        await h.apply("lifecycle", [early, scanned(early.return_id)])

        (released,) = await h.published(ReplacementReleased)
        assert (released.return_id, released.basis, released.correlation_id) == (
            early.return_id,
            "first_moving_scan",
            "corr-scan",
        )
        assert (await decision(h, early.return_id))[0] == "release"
        assert await decision(h, at_receipt.return_id) == (
            "wait",
            "the shop ships replacements after receipt: ship at receipt",
        )
        assert await decision(h, small.return_id) == (
            "wait",
            "4000 CNY is above the early-refund cap: ship at receipt",
        )
        assert await h.published(RefundDecided) == []  # an exchange is never refunded early

        # the goods came back short after the release: the missing one's value is for a person
        await h.apply("lifecycle", [received(early.return_id, "as_described")])
        (claw,) = await h.published(ClawbackFlagged)
        assert claw.return_id == early.return_id and claw.amount == 2000 and "released early" in claw.reason
        assert claw.refund_id is None
        # a receipt without a release claws nothing back
        await h.apply("lifecycle", [received(at_receipt.return_id, "as_described")])
        assert len(await h.published(ClawbackFlagged)) == 1


async def test_the_environment_setting_releases_for_a_shop_not_listed(handler_settings: Settings) -> None:
    own = RefundsSettings(gateway_url=NOWHERE, exchange_ship_at_first_scan=True)
    async with harness(SPEC, handler_settings, own) as h:
        ask, plain = exchange_in("shop-1"), requested()
        await h.apply("lifecycle", [ask, plain, scanned(ask.return_id), scanned(plain.return_id)])
        assert [e.return_id for e in await h.published(ReplacementReleased)] == [ask.return_id]
