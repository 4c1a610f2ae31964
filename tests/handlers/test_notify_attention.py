"""What needs a person in notify (GET /v1/notify/attention), against a real PostgreSQL: an SMS not delivered
and a number that opted out, on open returns only, oldest first, paged by cursor, counted per kind."""

from __future__ import annotations

from contracts.events import SmsSent
from returnflow.paging import decode_cursor
from returnflow.settings import Settings
from services.notify import SPEC, views
from services.notify.handlers import record_receipts, record_replies
from services.notify.providers import DeliveryReport, InboundSms
from tests.handlers.harness import harness
from tests.handlers.test_notify_handlers import notify, send_due
from tests.integration.notify_support import cancelled, requested

UNDELIVERED, OPTED_OUT, CANCELLED = "+8613800000001", "+8613800000002", "+8613800000003"


async def test_failures_and_opt_outs_on_open_returns_oldest_first(handler_settings: Settings) -> None:
    undelivered, opted_out, gone = (requested(phone=p) for p in (UNDELIVERED, OPTED_OUT, CANCELLED))
    async with harness(SPEC, handler_settings, notify()) as h:
        await h.apply("lifecycle", [undelivered, opted_out, gone])
        await send_due(h)
        sent = {e.return_id: e.provider_message_id for e in await h.published(SmsSent)}
        await record_receipts(h.ctx, [DeliveryReport(sent[undelivered.return_id], "undelivered", False, "30003")])
        await record_receipts(h.ctx, [DeliveryReport(sent[gone.return_id], "failed", False, "30005")])
        await record_replies(h.ctx, [InboundSms(OPTED_OUT, "STOP", "in-1"), InboundSms(CANCELLED, "STOP", "in-2")])
        await h.apply("lifecycle", [cancelled(gone.return_id)])  # a cancelled return needs nobody
        # the failure two minutes ago, the opt-out one minute ago (the service's clock is set to noon in Shanghai)
        await h.pool.execute("UPDATE messages SET updated_at = now() - interval '2 minutes' WHERE status = 'sent'")
        await h.pool.execute("UPDATE opt_outs SET changed_at = now() - interval '1 minute'")

        a = await views.attention(h.pool, None, None, None, 100)
        assert [(i["kind"], i["return_id"]) for i in a["items"]] == [
            ("sms_failed", undelivered.return_id),
            ("opted_out", opted_out.return_id),
        ]
        failed, stop = a["items"]
        assert (failed["step"], failed["detail"], failed["phone_masked"]) == ("requested", "30003", "+86*********01")
        assert (stop["detail"], stop["phone_masked"]) == ("STOP", "+86*********02")
        assert a["counts"] == {"sms_failed": 1, "opted_out": 1} and a["next_cursor"] is None

        # a page of one, then the next from its cursor; filters narrow the counts too
        first = await views.attention(h.pool, None, None, None, 1)
        assert [i["item_id"] for i in first["items"]] == [failed["item_id"]] and first["next_cursor"]
        rest = await views.attention(h.pool, None, None, decode_cursor(first["next_cursor"]), 1)
        assert [i["item_id"] for i in rest["items"]] == [stop["item_id"]] and rest["next_cursor"] is None
        assert (await views.attention(h.pool, "shop-2", None, None, 100))["counts"] == {"sms_failed": 0, "opted_out": 0}
        assert (await views.attention(h.pool, None, 3600, None, 100))["items"] == []

        # START: the number may be texted again, the item leaves
        await h.pool.execute("UPDATE opt_outs SET changed_at = '2000-01-01T00:00:00Z'")  # START comes later
        await record_replies(h.ctx, [InboundSms(OPTED_OUT, "START", "in-3")])
        assert (await views.attention(h.pool, None, None, None, 100))["counts"] == {"sms_failed": 1, "opted_out": 0}
