"""The queue page's filter form → the queue filter: amounts in the shop's major units (exactly, never a float),
unreadable values ignored rather than answered with an error page."""

from __future__ import annotations

from starlette.requests import Request

from services.workbench.api import queue_filter


def request(query: str) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/queue", "query_string": query.encode(), "headers": []})


def test_min_amount_is_read_in_minor_units_and_shown_back() -> None:
    f, shown = queue_filter(request("kind=escalation&min_amount=50.5&min_age_h=2"))
    assert (f.kind, f.min_amount, f.min_age_s) == ("escalation", 5050, 7200.0)
    assert shown == {"kind": "escalation", "min_amount": "50.5", "min_age_h": "2"}


def test_unreadable_amount_and_age_are_ignored() -> None:
    f, shown = queue_filter(request("min_amount=lots&min_age_h=soon&kind=nonsense"))
    assert (f.kind, f.min_amount, f.min_age_s) == (None, None, None)
    assert "min_amount" not in shown and "kind" not in shown


def test_a_refusal_shows_its_message_and_each_field_it_names() -> None:
    from services.workbench.upstream import Answer

    refused = Answer(
        422, {"detail": "receipt does not fit the return", "fields": [{"field": "amount", "message": "> 0"}]}
    )
    assert refused.field_errors() == {"form": "receipt does not fit the return", "amount": "> 0"}
    assert Answer(200, {"result": "done"}).field_errors() == {}
