"""Merchant webhooks: the consumer's step that records deliveries, and the worker that delivers them.

Recording (in the lifecycle consumer's transaction, no I/O): each lifecycle event a merchant hears of
(webhook_rules.news_of) becomes one delivery per endpoint of the return's shop that takes its type. A
return's shop comes with its return.requested; news of a return not known yet waits in `webhook_waiting` and
is fanned out when the request is applied (or by the worker's sweep, when the two were applied in parallel).

Delivering (a `returnflow.loops.Worker`, never on the consumer's path): claims due deliveries up to the free
slots of `webhook_concurrency`, attempts each in its own task (signed at the attempt, with the endpoint's
current secret; cut at `webhook_timeout_s`), and writes each outcome as it comes: delivered (2xx), retried
later with backoff, or failed for good at `give_up_at`. A slow endpoint holds one slot, not the round. A
process that dies mid-attempt leaves the row `sending` until its lease lapses; it is attempted again then
(at-least-once: the merchant dedupes by `webhook-id`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import asyncpg
import httpx
from prometheus_client import Counter

from contracts.events import Message, ReturnRequested
from returnflow.consumer import INFRA_ERRORS
from returnflow.db import Conn
from returnflow.logging import get_logger, redact_text
from returnflow.loops import Backoff, Worker, retry_delay_s
from returnflow.shops import Shops
from returnflow.signing import standard_headers, standard_key
from services.notify import webhook_repository as repo
from services.notify.sender import Clock
from services.notify.settings import NotifySettings
from services.notify.webhook_rules import (
    ERROR_CHARS,
    Delivered,
    GiveUp,
    News,
    RetryAt,
    ReturnFacts,
    accepted,
    after_attempt,
    any_endpoints,
    describe_answer,
    endpoint,
    merchant_news,
    payload,
    subscribed,
    webhook_id,
)

log = get_logger("returnflow.notify.webhooks")
HOUSEKEEPING_S = 600.0

# outcome: delivered, pending (refused or no answer: tried again), failed (given up)
WEBHOOK_ATTEMPTS = Counter("returnflow_merchant_webhook_attempts_total", "Merchant webhook attempts", ["outcome"])


# -- recording (consumer side) ------------------------------------------------------------------------------


def plan(ready: Sequence[tuple[News, ReturnFacts]], shops: Shops) -> list[repo.NewDelivery]:
    """One delivery per (endpoint that takes its type, news) of the return's shop."""
    out: list[repo.NewDelivery] = []
    for news, facts in ready:
        endpoints = subscribed(shops.get(facts.shop_id), news.type)
        if endpoints:
            body = payload(news, facts)
            out += [repo.NewDelivery(facts.shop_id, w.url, news, webhook_id(news.event_id), body) for w in endpoints]
    return out


async def record_deliveries(
    conn: Conn, shops: Shops, events: Sequence[Message], now: datetime, settings: NotifySettings
) -> int:
    """The deliveries a batch of lifecycle events asks for (after its requests were recorded); wakes the
    worker when there are any. Nothing at all while no shop has an endpoint."""
    if not any_endpoints(shops.shops):
        return 0
    news = merchant_news(events)
    requested = [e.return_id for e in events if isinstance(e, ReturnRequested)]
    if not news and not requested:
        return 0
    facts = await repo.return_facts(conn, [n.return_id for n in news] + requested)
    await repo.hold_waiting(conn, [n for n in news if n.return_id not in facts])
    ready = [(n, facts[n.return_id]) for n in news if n.return_id in facts]
    ready += [(n, facts[n.return_id]) for n in await repo.take_waiting(conn, [r for r in requested if r in facts])]
    return await _add(conn, plan(ready, shops), now, settings)


async def _add(conn: Conn, deliveries: Sequence[repo.NewDelivery], now: datetime, settings: NotifySettings) -> int:
    give_up_at = now + timedelta(seconds=settings.webhook_give_up_after_s)
    added = await repo.add_deliveries(conn, deliveries, now, give_up_at)
    if added:
        await repo.wake_worker(conn)
    return added


# -- delivering (the worker) ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempted:
    """What one attempt got: the endpoint's HTTP status (None: no answer) and the error when not a 2xx;
    `final`: no point trying again."""

    status: int | None
    error: str
    final: bool = False


class WebhookSender:
    def __init__(
        self, pool: asyncpg.Pool, shops: Shops, clock: Clock, settings: NotifySettings, dsn: str | None = None
    ) -> None:
        self.pool = pool
        self.shops = shops
        self.clock = clock
        self.settings = settings
        self.lease = timedelta(seconds=settings.webhook_timeout_s + 30)  # an attempt never outlives its lease
        self.client = httpx.AsyncClient(
            timeout=settings.webhook_timeout_s,
            follow_redirects=False,
            headers={"user-agent": "returnflow-webhooks/1"},
        )
        self.inflight: dict[int, asyncio.Task[None]] = {}
        self.stopping = False
        # monotonic time of the last housekeeping; None: not yet (monotonic time counts from boot, so 0.0 would
        # skip housekeeping for a process started in a machine's first 10 minutes)
        self.swept_at: float | None = None
        self.worker = Worker(
            "notify-webhooks",
            self.step,
            poll_s=settings.poll_interval_s,
            dsn=dsn,
            channel=repo.WEBHOOK_CHANNEL,
            backoff=Backoff(0.1, 5.0),
        )

    async def sweep(self) -> int:
        """Fan out waiting news whose return became known meanwhile (see the module's docstring)."""
        async with self.pool.acquire() as conn, conn.transaction():
            ready = await repo.sweep_waiting(conn)
            return await _add(conn, plan(ready, self.shops), self.clock.now(), self.settings) if ready else 0

    async def housekeeping(self) -> None:
        """At most every 10 minutes: forget finished deliveries past the log's retention, and news still waiting
        for its return's request after the give-up time."""
        if self.swept_at is not None and time.monotonic() - self.swept_at < HOUSEKEEPING_S:
            return
        self.swept_at = time.monotonic()
        now, s = self.clock.now(), self.settings
        finished, waiting = await repo.forget_old(
            self.pool,
            now - timedelta(seconds=s.webhook_log_retention_s),
            now - timedelta(seconds=s.webhook_give_up_after_s),
        )
        if finished or waiting:
            log.info("merchant webhooks forgotten", deliveries=finished, news_without_request=waiting)

    async def step(self) -> float | None:
        """One round: sweep, then fill the free slots with due deliveries. 0: more may be due now; None: every
        slot is busy (a finished attempt wakes the loop) or nothing is known to fall due."""
        await self.housekeeping()
        await self.sweep()
        free = min(self.settings.webhook_concurrency - len(self.inflight), self.settings.webhook_claim_batch)
        if free <= 0 or self.stopping:
            return None
        now = self.clock.now()
        claimed = await repo.claim(self.pool, now, now + self.lease, free)
        for row in claimed:
            self.inflight[row["id"]] = asyncio.create_task(self._attempt(row), name=f"webhook-{row['id']}")
        if len(claimed) == free:
            return 0 if len(self.inflight) < self.settings.webhook_concurrency else None
        due = await repo.next_due(self.pool)
        return None if due is None else max(0.0, (due - self.clock.now()).total_seconds())

    async def _attempt(self, row: asyncpg.Record) -> None:
        try:
            await self._settle(row, await self._post(row))
        except asyncio.CancelledError:
            raise
        except Exception:  # the outcome could not be written: the lease lapses and the attempt is made again
            log.exception("webhook attempt not recorded", delivery=row["id"])
        finally:
            self.inflight.pop(row["id"], None)
            self.worker.wake()

    async def _post(self, row: asyncpg.Record) -> Attempted:
        """One attempt, signed now with the endpoint's current secret."""
        found = endpoint(self.shops.get(row["shop_id"]), row["url"])
        if found is None:
            return Attempted(None, "endpoint no longer in the shops file", final=True)
        body = bytes(row["body"])
        headers = standard_headers(standard_key(found.secret.get_secret_value()), row["webhook_id"], body)
        headers["content-type"] = "application/json"
        timeout = self.settings.webhook_timeout_s
        try:
            async with asyncio.timeout(timeout):  # the whole attempt, not each read
                r = await self.client.post(found.url, content=body, headers=headers)
        except TimeoutError:
            return Attempted(None, f"no answer within {timeout:g} s")
        except httpx.HTTPError as exc:
            return Attempted(None, redact_text(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__))
        if accepted(r.status_code):
            return Attempted(r.status_code, "")
        return Attempted(r.status_code, redact_text(describe_answer(r.status_code, r.content)))

    async def _settle(self, row: asyncpg.Record, attempted: Attempted) -> None:
        now, attempt, s = self.clock.now(), row["attempts"], self.settings
        delay = retry_delay_s(attempt, s.webhook_retry_base_s, s.webhook_retry_max_s)
        next_at: datetime | None = None
        match (
            GiveUp(attempted.error)
            if attempted.final
            else after_attempt(attempted.status, attempted.error, attempt, now, row["give_up_at"], delay)
        ):
            case Delivered():
                state, error = "delivered", None  # the last failure stays as last_error
            case GiveUp(reason):
                state, error = "failed", reason
            case RetryAt(at):
                state, error, next_at = "pending", attempted.error[:ERROR_CHARS], at
        await self._write_until_recorded(row, attempt, state, attempted.status, error, next_at, now)
        WEBHOOK_ATTEMPTS.labels(state).inc()
        log.info(
            f"merchant webhook {state}",
            shop_id=row["shop_id"],
            host=urlsplit(row["url"]).hostname,
            type=row["type"],
            return_id=str(row["return_id"]),
            attempt=attempt,
            http_status=attempted.status,
            error=error,
            next_attempt_at=next_at.isoformat() if next_at else None,
            correlation_id=row["correlation_id"],
        )

    async def _write_until_recorded(
        self,
        row: asyncpg.Record,
        attempt: int,
        state: str,
        status: int | None,
        error: str | None,
        next_at: datetime | None,
        now: datetime,
    ) -> None:
        """The endpoint has answered: write it even while the database restarts (else the lease lapses and
        the merchant gets it again), until the worker stops."""
        backoff = Backoff(0.05, 2.0)
        while True:
            try:
                await repo.settle(self.pool, row["id"], attempt, state, status, error, next_at, now)
                return
            except INFRA_ERRORS as exc:
                if self.stopping:
                    raise
                delay = backoff.next()
                log.warning("database unavailable; retrying the webhook outcome", error=repr(exc), retry_in_s=delay)
                await asyncio.sleep(delay)

    async def idle(self) -> bool:
        """No delivery due now and none being attempted (a retry due in an hour is not work now)."""
        return not self.inflight and not await repo.work_due(self.pool, self.clock.now())

    async def run(self, grace_s: float) -> None:
        """The worker loop until cancelled; then claim nothing more and let the attempts under way finish (for
        up to `grace_s`), and cancel the rest (their lease lapses: attempted again after a restart)."""
        loop = asyncio.ensure_future(self.worker.run())
        try:
            await asyncio.shield(loop)
        except asyncio.CancelledError:
            self.stopping = True
            self.worker.stop()
            started = time.monotonic()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(loop, grace_s)
            pending = list(self.inflight.values())
            if pending:
                left = max(0.1, grace_s - (time.monotonic() - started))
                _, late = await asyncio.wait(pending, timeout=left)
                for task in late:
                    task.cancel()
            raise

    async def close(self) -> None:
        for task in list(self.inflight.values()):
            task.cancel()
        await self.client.aclose()
