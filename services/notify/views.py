"""Read side of the notify service: the SMS of a return (GET /v1/returns/{return_id}/sms)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from returnflow.backlogs import Backlog, backlogs_of
from returnflow.db import Conn
from returnflow.logging import mask_phone


async def sms_of_return(pool: asyncpg.Pool, return_id: UUID) -> dict[str, Any]:
    """Every message of a return (sent, waiting, not sent and why), in step order; the number masked."""
    rows = await pool.fetch(
        """SELECT m.step, m.kind, m.status, m.due_at, m.sent_at, m.reason, m.locale, m.body, m.provider,
                  m.provider_message_id, m.attempts, m.deferrals, m.last_error, m.delivery_status, m.params, r.phone
           FROM messages m JOIN returns r USING (return_id)
           WHERE m.return_id = $1 ORDER BY m.rank, m.step""",
        return_id,
    )
    messages = []
    for row in rows:
        message = dict(row)
        message["phone_masked"] = mask_phone(message.pop("phone") or "")
        messages.append(message)
    return {"return_id": str(return_id), "messages": messages}


async def backlogs(conn: Conn) -> list[Backlog]:
    """What notify holds waiting (gauges): SMS due and not sent yet (age: how long past due), and queued SMS
    deferred at least once (quiet hours, pacing, the provider away)."""
    row = await conn.fetchrow(
        """SELECT
             count(*) FILTER (WHERE due_at <= now()),
             extract(epoch FROM now() - min(due_at) FILTER (WHERE due_at <= now())),
             count(*) FILTER (WHERE deferrals > 0),
             extract(epoch FROM now() - min(created_at) FILTER (WHERE deferrals > 0))
           FROM messages WHERE status = 'queued'"""
    )
    names = ("sms_queued", "sms_deferred")
    return backlogs_of(names, row)
