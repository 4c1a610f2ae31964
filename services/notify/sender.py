"""The background sender: claims due messages, decides each (rules in domain.py), sends outside any
transaction, and records the outcome with its event through the outbox.

One round:
1. claim (one short transaction, serialized across processes by an advisory lock): lock due rows
   with FOR UPDATE SKIP LOCKED, decide each one (send / defer / suppress), render the text, give it a
   pacing slot, mark it `sending` with a lease; deferred and suppressed rows get their event here.
2. send (no transaction open): per return in step order, wait for the slot, call the provider.
3. record (outcomes of concurrent sends grouped into one transaction): sent -> sms.sent; refused
   (4xx) -> sms.failed at once; transient (5xx, timeout) -> back to the queue with backoff,
   sms.failed after the last attempt.
A process that dies while sending leaves `sending` rows whose lease runs out; the next claim takes
them again (a provider may then see that message twice: at-least-once at this boundary).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
from prometheus_client import Counter

from contracts.events import Message, SmsDeferred, SmsFailed, SmsSent, SmsSuppressed
from returnflow.batching import GroupCommitter
from returnflow.consumer import INFRA_ERRORS
from returnflow.db import Conn, Wakeups
from returnflow.logging import get_logger, mask_phone, redact_text
from returnflow.outbox import enqueue
from returnflow.settings import Settings
from services.notify import storage
from services.notify.domain import (
    Defer,
    Pending,
    QuietHours,
    Rules,
    Send,
    Situation,
    Suppress,
    decide,
    local_day_bounds,
    pace,
    retry_delay_s,
    zone,
)
from services.notify.providers import OutgoingSms, PermanentError, SmsProvider, TransientError
from services.notify.render import TemplateProblem, Templates, provider_params, template_name

log = get_logger("returnflow.notify.sender")

SMS_OUTCOMES = Counter("returnflow_sms_total", "SMS outcomes", ["provider", "outcome"])


class Clock:
    """The service's notion of now: real time plus an offset (settable, for demos and tests)."""

    def __init__(self, offset_s: float = 0.0) -> None:
        self.offset = timedelta(seconds=offset_s)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


def rules_from(settings: Settings) -> Rules:
    return Rules(
        quiet=QuietHours(settings.notify_quiet_start_hour, settings.notify_quiet_end_hour),
        daily_cap=settings.notify_daily_cap,
        reminder_stale_s=settings.notify_reminder_stale_s,
        default_timezone=settings.notify_default_timezone,
    )


@dataclass
class Claimed:
    id: int
    return_id: UUID
    step: str
    phone: str
    locale: str
    body: str
    params: dict[str, str]
    correlation_id: str
    send_at: datetime


@dataclass
class Outcome:
    """What the provider answered for one claimed message, waiting to be written."""

    m: Claimed
    outcome: str  # sent | failed | retry
    detail: str  # provider message id when sent, else the (redacted) error
    opted_out: bool
    now: datetime

    def event_base(self) -> dict[str, Any]:
        m = self.m
        return sms_event_base(m.return_id, m.correlation_id, m.step, m.phone, m.locale, self.now)


def sms_event_base(
    return_id: UUID, correlation_id: str, step: str, phone: str, locale: str, now: datetime
) -> dict[str, Any]:
    """The fields every sms.* event carries (the number masked)."""
    return {
        "occurred_at": now,
        "return_id": return_id,
        "correlation_id": correlation_id,
        "step": step,
        "phone_masked": mask_phone(phone),
        "locale": locale,
    }


def _values(row: asyncpg.Record, shop_names: dict[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = dict(row["params"] or {})
    requested_at = row["requested_at"]
    values.update(
        step=row["step"],
        shop_id=row["shop_id"],
        shop_name=shop_names.get(row["shop_id"] or "") or row["shop_name"] or row["shop_id"],
        kind=row["return_kind"],
        order_id=row["order_id"],
        return_ref=row["platform_return_id"],
        items=row["items"],
    )
    values.setdefault("tracking_no", None)
    if requested_at is not None:
        values["days"] = max(0, (row["due_at"] - requested_at).days)
    return values


class Sender:
    def __init__(
        self, pool: asyncpg.Pool, provider: SmsProvider, templates: Templates, clock: Clock, settings: Settings
    ) -> None:
        self.pool = pool
        self.provider = provider
        self.templates = templates
        self.clock = clock
        self.settings = settings
        self.rules = rules_from(settings)
        self.wake = asyncio.Event()
        self.stopping = False
        self.rounds = 0
        # Outcomes of concurrent sends are written together: one transaction per group, not per SMS.
        self.outcomes: GroupCommitter[Outcome, tuple[str, datetime | None]] = GroupCommitter(
            pool, self._write_outcomes, max_size=500, max_wait_s=0.002
        )

    # -- claim -----------------------------------------------------------------------------------------
    def _event_base(self, row: asyncpg.Record, locale: str, now: datetime) -> dict[str, Any]:
        return sms_event_base(row["return_id"], row["correlation_id"], row["step"], row["phone"] or "", locale, now)

    async def claim(self) -> tuple[int, list[Claimed]]:
        """(rows decided, the ones to send now)."""
        s = self.settings
        async with self.pool.acquire() as conn, conn.transaction():
            await storage.lock_claims(conn)
            now = self.clock.now()
            rows = await storage.due_messages(conn, now, s.notify_claim_batch)
            if not rows:
                return 0, []
            ids = [r["id"] for r in rows]
            phones = [r["phone"] for r in rows if r["phone"]]
            out_numbers = await storage.opted_out(conn, phones)
            sent = await storage.sent_steps(conn, [r["return_id"] for r in rows], ids)
            windows: dict[int, tuple[str, datetime, datetime]] = {}
            for r in rows:
                start, end = local_day_bounds(now, zone(r["timezone"], self.rules.default_timezone))
                windows[r["id"]] = (r["phone"] or "", start, end)
            counts = await storage.sent_counts(conn, list(set(windows.values())), ids)
            due_steps: dict[UUID, set[str]] = defaultdict(set)
            for r in rows:
                due_steps[r["return_id"]].add(r["step"])
            tat = await storage.pacing_tat(conn, self.provider.sender)
            claims: list[storage.Claim] = []
            claimed: list[Claimed] = []
            deferrals: list[tuple[int, datetime, str]] = []
            suppressions: list[tuple[int, str]] = []
            failures: list[tuple[int, str]] = []
            events: list[Message] = []
            lease = timedelta(seconds=s.notify_send_lease_s)
            # per return in step order: an earlier step decided first is never "superseded" by a later
            # one that merely arrived first (a scan can come before the request it belongs to)
            for r in sorted(rows, key=lambda r: (r["return_id"], r["rank"], r["due_at"])):
                rid = r["return_id"]
                locale = self.templates.locale_for(r["locale"])
                window = windows[r["id"]]
                key = (window[0], window[1])
                if not r["phone"]:
                    failures.append((r["id"], "no phone number for this return"))
                    events.append(SmsFailed(**self._event_base(r, locale, now), provider="-", error="no phone number"))
                    continue
                decision = decide(
                    Pending(r["step"], r["due_at"], r["timezone"] or self.rules.default_timezone),
                    Situation(
                        now=now,
                        opted_out=r["phone"] in out_numbers,
                        closed=bool(r["closed"]),
                        sent_today=counts.get(key, 0),
                        sent_steps=frozenset(sent.get(rid, set())),
                        due_steps=frozenset(due_steps[rid]),
                    ),
                    self.rules,
                )
                if isinstance(decision, Suppress):
                    suppressions.append((r["id"], decision.reason))
                    due_steps[rid].discard(r["step"])
                    events.append(SmsSuppressed(**self._event_base(r, locale, now), reason=decision.reason))
                    continue
                if isinstance(decision, Defer):
                    deferrals.append((r["id"], decision.until, decision.reason))
                    events.append(
                        SmsDeferred(
                            **self._event_base(r, locale, now), deliver_after=decision.until, reason=decision.reason
                        )
                    )
                    continue
                assert isinstance(decision, Send)
                values = _values(r, s.notify_shop_names)
                try:
                    body = self.templates.render(r["step"], locale, values)
                except TemplateProblem as exc:
                    failures.append((r["id"], str(exc)))
                    events.append(
                        SmsFailed(**self._event_base(r, locale, now), provider=self.provider.name, error=str(exc)[:500])
                    )
                    log.error("SMS template does not render", step=r["step"], locale=locale, error=str(exc))
                    continue
                send_at, tat = pace(tat, now, s.notify_sender_rate_per_s, s.notify_sender_burst)
                counts[key] = counts.get(key, 0) + 1
                sent.setdefault(rid, set()).add(r["step"])
                claims.append(storage.Claim(r["id"], locale, body, send_at, send_at + lease))
                params = provider_params(values, locale)
                params["return_id"] = str(rid)
                claimed.append(
                    Claimed(r["id"], rid, r["step"], r["phone"], locale, body, params, r["correlation_id"], send_at)
                )
            await storage.apply_claims(
                conn, now, self.provider.name, self.provider.sender, claims, deferrals, suppressions, failures
            )
            if tat is not None and claims:
                await storage.set_pacing_tat(conn, self.provider.sender, tat)
            await enqueue(conn, events)
        for e in events:
            outcome = e.type.split(".", 1)[1]
            SMS_OUTCOMES.labels(self.provider.name, outcome).inc()
            log.info(
                f"SMS {outcome}",
                return_id=str(e.return_id),
                step=getattr(e, "step", None),
                phone=getattr(e, "phone_masked", None),
                reason=getattr(e, "reason", None) or getattr(e, "error", None),
                correlation_id=e.correlation_id,
            )
        return len(rows), claimed

    # -- send ------------------------------------------------------------------------------------------
    async def _record(self, m: Claimed, outcome: str, detail: str = "", opted_out: bool = False) -> datetime | None:
        """Write the outcome (and its event); for a retry, returns when the message is due again.
        Outcomes of concurrent sends share one transaction (see `_write_outcomes`)."""
        if outcome != "sent":  # providers quote the number in their errors: events never carry it
            detail = redact_text(detail)
        item = Outcome(m, outcome, detail, opted_out, self.clock.now())
        # The provider has answered: its outcome must be written even if the database is away (a
        # restart), or the message is claimed again once its lease has run out and sent a second time.
        # Retry on connection errors until the sender stops: giving up sooner only makes that second
        # send certain (a drill caught one when the retries stopped at the lease while PostgreSQL
        # restarted). This sender claims nothing meanwhile: a round waits for all of its sends.
        delay = 0.05
        while True:
            try:
                outcome, retry_at = await self.outcomes.submit(item)
                break
            except INFRA_ERRORS as exc:
                if self.stopping:
                    raise
                log.warning("database unavailable; retrying the SMS outcome", step=m.step, error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        SMS_OUTCOMES.labels(self.provider.name, outcome).inc()
        log.info(
            f"SMS {outcome}",
            return_id=str(m.return_id),
            step=m.step,
            phone=mask_phone(m.phone),
            detail=detail[:200] if outcome != "sent" else None,
            correlation_id=m.correlation_id,
        )
        return retry_at

    async def _write_outcomes(self, conn: Conn, items: Sequence[Outcome]) -> list[tuple[str, datetime | None]]:
        """One transaction for a group of outcomes: each message's new state and its event (through the
        outbox). A message no longer `sending` (already recorded by an earlier try) gets no second event."""
        s = self.settings
        results: list[tuple[str, datetime | None]] = []
        events: list[Message] = []
        sent = [o for o in items if o.outcome == "sent"]
        recorded = await storage.record_sent_many(conn, [(o.m.id, o.detail, o.now) for o in sent])
        for o in items:
            outcome, retry_at = o.outcome, None
            if o.outcome == "sent":
                if o.m.id in recorded:
                    recorded.discard(o.m.id)  # the same message twice in one group: one event
                    events.append(SmsSent(**o.event_base(), provider=self.provider.name, provider_message_id=o.detail))
            elif o.outcome == "failed":
                if await storage.record_failed(conn, o.m.id, o.detail):
                    events.append(SmsFailed(**o.event_base(), provider=self.provider.name, error=o.detail[:500]))
                if o.opted_out:  # the provider knows the number replied STOP: honour it here too
                    await storage.set_consent(conn, o.m.phone, True, "provider", self.provider.name, o.now)
            else:
                attempts_before = await conn.fetchval("SELECT attempts FROM messages WHERE id = $1", o.m.id)
                attempt = int(attempts_before or 0) + 1
                if attempt >= s.notify_send_max_attempts:
                    error = f"gave up after {attempt} attempts: {o.detail}"
                    if await storage.record_failed(conn, o.m.id, error):
                        events.append(SmsFailed(**o.event_base(), provider=self.provider.name, error=error[:500]))
                    outcome = "failed"
                else:
                    delay = retry_delay_s(attempt, s.notify_retry_base_s, s.notify_retry_max_s)
                    retry_at = o.now + timedelta(seconds=delay)
                    await storage.record_retry(conn, o.m.id, o.detail, retry_at)
            results.append((outcome, retry_at))
        await enqueue(conn, events)
        return results

    async def _send_return(self, group: list[Claimed], limit: asyncio.Semaphore) -> None:
        """One return's messages, in step order; a transient failure holds back the later steps."""
        for i, m in enumerate(group):
            if self.stopping:
                await storage.release(self.pool, [x.id for x in group[i:]])
                return
            wait = (m.send_at - self.clock.now()).total_seconds()
            if wait > 0:
                await asyncio.sleep(wait)
            sms = OutgoingSms(
                m.id, m.phone, m.body, m.step, m.locale, template_name(m.step), m.params, self.clock.now()
            )
            try:
                async with limit:
                    pid = await self.provider.send(sms)
            except PermanentError as exc:
                await self._record(m, "failed", str(exc), opted_out=exc.opted_out)
                continue
            except (TransientError, Exception) as exc:
                if not isinstance(exc, TransientError):
                    log.exception("SMS provider raised unexpectedly", step=m.step)
                retry_at = await self._record(m, "retry", str(exc) or type(exc).__name__)
                # the later steps wait with it, so the customer still reads them in order
                await storage.release(self.pool, [x.id for x in group[i + 1 :]], retry_at)
                return
            await self._record(m, "sent", pid)

    async def round(self) -> int:
        decided, claimed = await self.claim()
        if not claimed:
            return decided
        groups: dict[UUID, list[Claimed]] = defaultdict(list)
        for m in claimed:
            groups[m.return_id].append(m)
        limit = asyncio.Semaphore(max(1, self.settings.notify_send_concurrency))
        await asyncio.gather(*(self._send_return(g, limit) for g in groups.values()))
        self.rounds += 1
        return decided

    # -- loop ------------------------------------------------------------------------------------------
    async def _wait(self) -> None:
        timeout = self.settings.notify_poll_interval_s
        with contextlib.suppress(Exception):
            due = await storage.next_due(self.pool)
            if due is not None:
                timeout = max(0.0, min(timeout, (due - self.clock.now()).total_seconds()))
        if timeout <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), timeout)

    async def run(self, dsn: str) -> None:
        wakeups = Wakeups(dsn, "notify_sender", self.wake)
        backoff = 0.1
        try:
            while not self.stopping:
                await wakeups.ensure()
                self.wake.clear()
                try:
                    n = await self.round()
                    backoff = 0.1
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("sender round failed; retrying", error=repr(exc))
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                if n == 0 and not self.stopping:
                    await self._wait()
        finally:
            await wakeups.close()

    async def stop(self) -> None:
        self.stopping = True
        self.wake.set()

    async def close(self) -> None:
        """After the send loop ended: stop the outcome writers."""
        await self.outcomes.close()
