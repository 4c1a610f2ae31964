"""SMS problems on open returns as a kind of the workbench's queue: notify's items mapped (masked number,
role needed: anyone who decides), ordered with the rest and filtered like them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.workbench import rules
from services.workbench.page_text import TEXT
from services.workbench.rules import QueueFilter, QueueItem
from services.workbench.views import ROLE_OF, _sms

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
RID = "0b9e7f3c-59a4-4a0e-9a52-3f1f6f0c2d11"


def test_notify_items_become_sms_queue_items() -> None:
    failed = _sms(
        {
            "kind": "sms_failed",
            "item_id": "sms:7",
            "return_id": RID,
            "shop_id": "shop-1",
            "at": "2026-12-02T11:00:00+00:00",
            "step": "requested",
            "detail": "30003",
            "phone_masked": "+86*********01",
        }
    )
    assert (failed.kind, failed.item_id, failed.return_id, failed.role_needed, failed.shop) == (
        "sms",
        "sms:7",
        RID,
        "agent",
        "shop-1",
    )
    assert failed.created_at == NOW - timedelta(hours=1)
    assert failed.summary == "not delivered: requested (30003) · +86*********01"
    stop = _sms({"kind": "opted_out", "item_id": f"opt_out:{RID}", "return_id": RID, "detail": "STOP",
                 "phone_masked": "+86*********02", "at": "2026-12-02T11:30:00+00:00"})  # fmt: skip
    assert stop.summary == "opted out (STOP) · +86*********02"
    assert "13800" not in failed.summary + stop.summary


def test_sms_items_are_a_kind_with_words_in_both_languages_and_a_role() -> None:
    assert "sms" in rules.KINDS and ROLE_OF["sms"] == "agent"
    assert TEXT["en"]["k_sms"] and TEXT["zh-CN"]["k_sms"]


def test_sms_items_take_their_place_oldest_first_and_the_filters() -> None:
    sms = QueueItem("sms", "sms:1", NOW - timedelta(hours=2), RID, "agent", shop="shop-1")
    esc = QueueItem("escalation", "e-1", NOW - timedelta(hours=1), RID, "supervisor", 3000, "CNY", "shop-1")
    page = rules.queue_page([esc, sms], QueueFilter(), NOW, None, 10)
    assert [i.item_id for i in page.items] == ["sms:1", "e-1"] and page.counts == {"sms": 1, "escalation": 1}
    assert [i.item_id for i in rules.queue_page([esc, sms], QueueFilter(kind="sms"), NOW, None, 10).items] == ["sms:1"]
    assert rules.queue_page([esc, sms], QueueFilter(role="supervisor"), NOW, None, 10).counts == {"escalation": 1}
    assert rules.queue_page([esc, sms], QueueFilter(min_age_s=3 * 3600), NOW, None, 10).items == []
