"""The SMS sender: claims due messages, decides each (rules in rules.py), sends outside any transaction,
and records the outcome with its event through the outbox. It runs as a `returnflow.loops.Worker`.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
from prometheus_client import Counter

from contracts.events import Message
from returnflow.batching import GroupCommitter
from returnflow.consumer import INFRA_ERRORS
from returnflow.db import Conn
from returnflow.logging import get_logger, mask_phone, redact_text
from returnflow.loops import Backoff, Worker, retry_delay_s
from returnflow.outbox import enqueue
from returnflow.shops import Shops
from returnflow.tracing import ATTR_RETURN_ID, resumed
from services.notify import events, repository
from services.notify.events import SmsRef
from services.notify.providers import OutgoingSms, PermanentError, SmsProvider, TransientError
from services.notify.render import TemplateProblem, Templates, provider_params, template_name
from services.notify.rules import (
    Defer,
    Pending,
    QuietHours,
    Rules,
    Send,
    Situation,
    Suppress,
    decide,
    gives_up,
    local_day_bounds,
    pace,
    zone,
)
from services.notify.settings import NotifySettings

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


def rules_from(settings: NotifySettings) -> Rules:
    return Rules(
        quiet=QuietHours(settings.quiet_start_hour, settings.quiet_end_hour),
        daily_cap=settings.daily_cap,
        reminder_stale_s=settings.reminder_stale_s,
        default_timezone=settings.default_timezone,
    )


@dataclass
class Claimed:
    """A message this sender claimed: it sends it at `send_at`."""

    id: int
    ref: SmsRef
    body: str
    params: dict[str, str]
    send_at: datetime
    sender: str | None = None  # the shop's own SMS sender (shops file), else the provider's


@dataclass
class Outcome:
    """What the provider answered for one claimed message, waiting to be written."""

    m: Claimed
    outcome: str  # sent | failed | retry
    detail: str  # provider message id when sent, else the (redacted) error
    opted_out: bool
    now: datetime


def template_values(row: asyncpg.Record, shop_name: str | None) -> dict[str, Any]:
    """What a due message's template may say: its event's parameters and the return's facts. The shop's
    name: the shops file's, else RETURNFLOW_NOTIFY_SHOP_NAMES, else the name the platform sent, else its id."""
    values: dict[str, Any] = dict(row["params"] or {})
    requested_at = row["requested_at"]
    values.update(
        step=row["step"],
        shop_id=row["shop_id"],
        shop_name=shop_name or row["shop_name"] or row["shop_id"],
        kind=row["return_kind"],
        order_id=row["order_id"],
        return_ref=row["platform_return_id"],
        items=row["items"],
    )
    values.setdefault("tracking_no", None)
    if requested_at is not None:
        values["days"] = max(0, (row["due_at"] - requested_at).days)
    return values


@dataclass
class Known:
    """What the rules need to know about the due messages of one claim, kept current while it decides."""

    opted_out: set[str]
    sent: dict[UUID, set[str]]  # steps of each return sent or being sent
    windows: dict[int, tuple[str, datetime, datetime]]  # message id -> (phone, its local day)
    counts: dict[tuple[str, datetime], int]  # (phone, day start) -> messages sent that day
    due: dict[UUID, set[str]]  # steps of each return due in this claim

    def _day(self, r: asyncpg.Record) -> tuple[str, datetime]:
        phone, start, _ = self.windows[r["id"]]
        return phone, start

    def situation(self, r: asyncpg.Record, now: datetime) -> Situation:
        rid = r["return_id"]
        return Situation(
            now=now,
            has_phone=bool(r["phone"]),
            opted_out=r["phone"] in self.opted_out,
            closed=bool(r["closed"]),
            sent_today=self.counts.get(self._day(r), 0),
            sent_steps=frozenset(self.sent.get(rid, set())),
            due_steps=frozenset(self.due[rid]),
        )

    def took(self, r: asyncpg.Record) -> None:
        """Claimed for sending: it counts against the daily cap and supersedes earlier steps."""
        self.counts[self._day(r)] = self.counts.get(self._day(r), 0) + 1
        self.sent.setdefault(r["return_id"], set()).add(r["step"])

    def dropped(self, r: asyncpg.Record) -> None:
        """Suppressed: no longer due with the return's other messages."""
        self.due[r["return_id"]].discard(r["step"])


async def load_known(conn: Conn, rows: Sequence[asyncpg.Record], now: datetime, default_tz: str) -> Known:
    ids = [r["id"] for r in rows]
    windows: dict[int, tuple[str, datetime, datetime]] = {}
    due: dict[UUID, set[str]] = defaultdict(set)
    for r in rows:
        start, end = local_day_bounds(now, zone(r["timezone"], default_tz))
        windows[r["id"]] = (r["phone"] or "", start, end)
        due[r["return_id"]].add(r["step"])
    return Known(
        opted_out=await repository.opted_out(conn, [r["phone"] for r in rows if r["phone"]]),
        sent=await repository.sent_steps(conn, [r["return_id"] for r in rows], ids),
        windows=windows,
        counts=await repository.sent_counts(conn, list(set(windows.values())), ids),
        due=due,
    )


@dataclass
class ClaimRound:
    """What one claim decided, written in its transaction."""

    tat: datetime | None  # the pacing slot after the last message claimed
    claims: list[repository.Claim] = field(default_factory=list)
    claimed: list[Claimed] = field(default_factory=list)
    deferrals: list[tuple[int, datetime, str]] = field(default_factory=list)
    suppressions: list[tuple[int, str]] = field(default_factory=list)
    failures: list[tuple[int, str]] = field(default_factory=list)
    events: list[Message] = field(default_factory=list)

    def fail(self, message_id: int, reason: str, event: Message) -> None:
        self.failures.append((message_id, reason))
        self.events.append(event)

    def hold_back(self, message_id: int, decision: Defer | Suppress, event: Message) -> None:
        if isinstance(decision, Defer):
            self.deferrals.append((message_id, decision.until, decision.reason))
        else:
            self.suppressions.append((message_id, decision.reason))
        self.events.append(event)


def _ref(row: asyncpg.Record, locale: str) -> SmsRef:
    return SmsRef(row["return_id"], row["correlation_id"], row["step"], row["phone"] or "", locale)


class Sender:
    def __init__(
        self,
        pool: asyncpg.Pool,
        provider: SmsProvider,
        templates: Templates,
        clock: Clock,
        settings: NotifySettings,
        dsn: str | None = None,
        link_for: Callable[[UUID], str | None] = lambda _: None,
        shops: Shops | None = None,
    ) -> None:
        self.pool = pool
        self.shops = shops or Shops()  # per-shop name, default locale and time zone, sender
        self.link_for = link_for  # the customer's page of a return (returnflow/links.py), None: no link
        self.provider = provider
        self.templates = templates
        self.clock = clock
        self.settings = settings
        self.rules = rules_from(settings)
        self.stopping = False
        self.rounds = 0
        # Outcomes of concurrent sends are written together: one transaction per group, not per SMS.
        self.outcomes: GroupCommitter[Outcome, tuple[str, datetime | None]] = GroupCommitter(
            pool, self._write_outcomes, max_size=500, max_wait_s=0.002
        )
        # Woken by the consumer (NOTIFY on the channel) when it scheduled messages.
        self.worker = Worker(
            "notify-sender",
            self.step,
            poll_s=settings.poll_interval_s,
            dsn=dsn,
            channel=repository.SENDER_CHANNEL,
            backoff=Backoff(0.1, 5.0),
        )

    # -- claim -----------------------------------------------------------------------------------------
    async def claim(self) -> tuple[int, list[Claimed]]:
        """(rows decided, the ones to send now)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await repository.lock_claims(conn)
            now = self.clock.now()
            rows = await repository.due_messages(conn, now, self.settings.claim_batch)
            if not rows:
                return 0, []
            known = await load_known(conn, rows, now, self.rules.default_timezone)
            decided = ClaimRound(await repository.pacing_tat(conn, self.provider.sender))
            # per return in step order: an earlier step decided first is never "superseded" by a later
            # one that merely arrived first (a scan can come before the request it belongs to)
            for r in sorted(rows, key=lambda r: (r["return_id"], r["rank"], r["due_at"])):
                self._decide(r, known, decided, now)
            await self._save_claim(conn, decided, now)
        self._log_decided(decided.events)
        return len(rows), decided.claimed

    def _decide(self, r: asyncpg.Record, known: Known, decided: ClaimRound, now: datetime) -> None:
        """One due message: held back (deferred, suppressed: also when there is no number) or claimed for
        sending."""
        shop = self.shops.get(r["shop_id"])
        ref = _ref(r, self.templates.locale_for(r["locale"] or (shop.locale if shop else None)))
        shop_tz = shop.timezone if shop else None
        pending = Pending(r["step"], r["due_at"], r["timezone"] or shop_tz or self.rules.default_timezone)
        decision = decide(pending, known.situation(r, now), self.rules)
        if isinstance(decision, Send):
            self._take(r, ref, known, decided, now)
            return
        if isinstance(decision, Suppress):
            known.dropped(r)
        decided.hold_back(r["id"], decision, events.held_back(ref, now, decision))

    def _take(self, r: asyncpg.Record, ref: SmsRef, known: Known, decided: ClaimRound, now: datetime) -> None:
        """Render the message and give it a pacing slot and a lease: this sender sends it."""
        s = self.settings
        shop = self.shops.get(r["shop_id"])
        values = template_values(r, (shop.name if shop else None) or s.shop_names.get(r["shop_id"] or ""))
        values["link"] = self.link_for(ref.return_id)
        try:
            body = self.templates.render(r["step"], ref.locale, values)
        except TemplateProblem as exc:
            decided.fail(r["id"], str(exc), events.failed(ref, now, self.provider.name, str(exc)))
            log.error("SMS template does not render", step=r["step"], locale=ref.locale, error=str(exc))
            return
        send_at, decided.tat = pace(decided.tat, now, s.sender_rate_per_s, s.sender_burst)
        known.took(r)
        lease_until = send_at + timedelta(seconds=s.send_lease_s)
        decided.claims.append(repository.Claim(r["id"], ref.locale, body, send_at, lease_until))
        params = {**provider_params(values, ref.locale), "return_id": str(ref.return_id)}
        decided.claimed.append(Claimed(r["id"], ref, body, params, send_at, shop.sms.sender if shop else None))

    async def _save_claim(self, conn: Conn, decided: ClaimRound, now: datetime) -> None:
        d, p = decided, self.provider
        await repository.mark_sending(conn, now, p.name, p.sender, d.claims)
        await repository.defer(conn, d.deferrals)
        await repository.close_unsent(conn, d.suppressions, d.failures)
        if d.tat is not None and d.claims:
            await repository.set_pacing_tat(conn, p.sender, d.tat)
        await enqueue(conn, d.events)

    def _log_decided(self, decided: Sequence[Message]) -> None:
        for e in decided:
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

    # -- record ----------------------------------------------------------------------------------------
    async def _record(self, m: Claimed, outcome: str, detail: str = "", opted_out: bool = False) -> datetime | None:
        """Write the outcome (and its event); for a retry, returns when the message is due again.
        Outcomes of concurrent sends share one transaction (see `_write_outcomes`)."""
        if outcome != "sent":  # providers quote the number in their errors: events never carry it
            detail = redact_text(detail)
        outcome, retry_at = await self._write_until_recorded(Outcome(m, outcome, detail, opted_out, self.clock.now()))
        SMS_OUTCOMES.labels(self.provider.name, outcome).inc()
        log.info(
            f"SMS {outcome}",
            return_id=str(m.ref.return_id),
            step=m.ref.step,
            phone=mask_phone(m.ref.phone),
            detail=detail[:200] if outcome != "sent" else None,
            correlation_id=m.ref.correlation_id,
        )
        return retry_at

    async def _write_until_recorded(self, item: Outcome) -> tuple[str, datetime | None]:
        """The provider has answered: its outcome must be written even if the database is away (a
        restart), or the message is claimed again once its lease has run out and sent a second time.
        Retry on connection errors until the sender stops: giving up sooner only makes that second send
        certain (a drill caught one when the retries stopped at the lease while PostgreSQL restarted).
        This sender claims nothing meanwhile: a round waits for all of its sends."""
        backoff = Backoff(0.05, 2.0)
        while True:
            try:
                return await self.outcomes.submit(item)
            except INFRA_ERRORS as exc:
                if self.stopping:
                    raise
                delay = backoff.next()
                log.warning(
                    "database unavailable; retrying the SMS outcome",
                    step=item.m.ref.step,
                    error=repr(exc),
                    retry_in_s=delay,
                )
                await asyncio.sleep(delay)

    async def _write_outcomes(self, conn: Conn, items: Sequence[Outcome]) -> list[tuple[str, datetime | None]]:
        """One transaction for a group of outcomes: each message's new state and its event (through the
        outbox). A message no longer `sending` (already recorded by an earlier try) gets no second event."""
        written: list[Message] = []
        sent = [(o.m.id, o.detail, o.now) for o in items if o.outcome == "sent"]
        recorded = await repository.record_sent_many(conn, sent)
        results: list[tuple[str, datetime | None]] = []
        for o in items:
            if o.outcome == "sent":
                if o.m.id in recorded:
                    recorded.discard(o.m.id)  # the same message twice in one group: one event
                    written.append(events.sent(o.m.ref, o.now, self.provider.name, o.detail))
                results.append(("sent", None))
            elif o.outcome == "failed":
                results.append(await self._write_refused(conn, o, written))
            else:
                results.append(await self._write_retry(conn, o, written))
        await enqueue(conn, written)
        return results

    async def _write_refused(self, conn: Conn, o: Outcome, written: list[Message]) -> tuple[str, None]:
        if await repository.record_failed(conn, o.m.id, o.detail):
            written.append(events.failed(o.m.ref, o.now, self.provider.name, o.detail))
        if o.opted_out:  # the provider knows the number replied STOP: honour it here too
            await repository.set_consent(conn, o.m.ref.phone, True, "provider", self.provider.name, o.now)
        return "failed", None

    async def _write_retry(self, conn: Conn, o: Outcome, written: list[Message]) -> tuple[str, datetime | None]:
        """A transient failure: back to the queue with backoff, or failed after the last attempt."""
        s = self.settings
        attempt = await repository.attempts(conn, o.m.id) + 1
        if gives_up(attempt, s.send_max_attempts):
            error = f"gave up after {attempt} attempts: {o.detail}"
            if await repository.record_failed(conn, o.m.id, error):
                written.append(events.failed(o.m.ref, o.now, self.provider.name, error))
            return "failed", None
        retry_at = o.now + timedelta(seconds=retry_delay_s(attempt, s.retry_base_s, s.retry_max_s))
        await repository.record_retry(conn, o.m.id, o.detail, retry_at)
        return "retry", retry_at

    # -- send ------------------------------------------------------------------------------------------
    async def _send_return(self, group: list[Claimed], limit: asyncio.Semaphore) -> None:
        """One return's messages, in step order; a transient failure holds back the later steps."""
        for i, m in enumerate(group):
            if self.stopping:
                await repository.release(self.pool, [x.id for x in group[i:]])
                return
            wait = (m.send_at - self.clock.now()).total_seconds()
            if wait > 0:
                await asyncio.sleep(wait)
            ref = m.ref
            sms = OutgoingSms(
                m.id,
                ref.phone,
                m.body,
                ref.step,
                ref.locale,
                template_name(ref.step),
                m.params,
                self.clock.now(),
                m.sender,
            )
            # the send and its outcome continue the return's trace (the outcome's event carries it)
            with resumed("sms send", ref.correlation_id, {ATTR_RETURN_ID: str(ref.return_id), "sms.step": ref.step}):
                try:
                    async with limit:
                        pid = await self.provider.send(sms)
                except PermanentError as exc:
                    await self._record(m, "failed", str(exc), opted_out=exc.opted_out)
                    continue
                except (TransientError, Exception) as exc:
                    if not isinstance(exc, TransientError):
                        log.exception("SMS provider raised unexpectedly", step=ref.step)
                    retry_at = await self._record(m, "retry", str(exc) or type(exc).__name__)
                    # the later steps wait with it, so the customer still reads them in order
                    await repository.release(self.pool, [x.id for x in group[i + 1 :]], retry_at)
                    return
                await self._record(m, "sent", pid)

    async def round(self) -> int:
        """Claim, send and record once; returns how many due messages were decided."""
        decided, claimed = await self.claim()
        if not claimed:
            return decided
        groups: dict[UUID, list[Claimed]] = defaultdict(list)
        for m in claimed:
            groups[m.ref.return_id].append(m)
        limit = asyncio.Semaphore(max(1, self.settings.send_concurrency))
        await asyncio.gather(*(self._send_return(g, limit) for g in groups.values()))
        self.rounds += 1
        return decided

    # -- the worker --------------------------------------------------------------------------------------
    async def step(self) -> float | None:
        """One round of the worker: 0 when it decided messages (more may be due now), else the seconds
        until the next message falls due (None: none known, or the database did not answer)."""
        if await self.round():
            return 0
        with contextlib.suppress(Exception):
            due = await repository.next_due(self.pool)
            if due is not None:
                return max(0.0, (due - self.clock.now()).total_seconds())
        return None

    async def run(self, grace_s: float) -> None:
        """The worker loop until cancelled; then claim nothing more, give back what was not sent yet, and
        let the sends under way be recorded (for up to `grace_s`: a provider call may take its timeout)."""
        loop = asyncio.ensure_future(self.worker.run())
        try:
            await asyncio.shield(loop)
        except asyncio.CancelledError:
            self.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(loop, grace_s)
            raise

    def stop(self) -> None:
        self.stopping = True
        self.worker.stop()

    async def close(self) -> None:
        """After the send loop ended: stop the outcome writers."""
        await self.outcomes.close()
