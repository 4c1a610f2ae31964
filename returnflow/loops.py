"""The one backoff and the one worker loop every background task of a service uses.

A worker is a `step` that does one round of work and says when the next is due: `0` (more work now),
a number of seconds (the next item is due then), or `None` (nothing known: wait for a wake-up or the
poll interval). The loop wakes early on a NOTIFY (`Wakeups`) or `wake()`, survives failures with
jittered exponential backoff, and stops when cancelled or `stop()`ped.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from returnflow.db import Wakeups
from returnflow.logging import get_logger

log = get_logger("returnflow.loops")


@dataclass
class Backoff:
    """Exponential backoff with jitter: the n-th delay is drawn from [cap_n / 2, cap_n], where
    cap_n = min(base_s * 2^(n-1), max_s). Half-jitter keeps a floor (a retry never comes at once) while
    many workers that failed together spread out."""

    base_s: float = 0.05
    max_s: float = 2.0
    attempt: int = 0

    def ceiling(self, attempt: int) -> float:
        return min(self.base_s * 2 ** max(0, attempt - 1), self.max_s)

    def next(self) -> float:
        self.attempt += 1
        cap = self.ceiling(self.attempt)
        return cap / 2 + random.random() * cap / 2

    def reset(self) -> None:
        self.attempt = 0

    async def sleep(self) -> None:
        await asyncio.sleep(self.next())


def retry_delay_s(attempts: int, base_s: float, max_s: float) -> float:
    """The delay before retry number `attempts` of a durable job (kept in PostgreSQL), jittered like
    `Backoff`: what the payment and SMS retries are scheduled with."""
    return Backoff(base_s, max_s, attempt=max(0, attempts - 1)).next()


Step = Callable[[], Awaitable[float | None]]


@dataclass
class Worker:
    """Runs `step` until stopped. `wakeups` (LISTEN/NOTIFY) and `wake()` cut a wait short."""

    name: str
    step: Step
    poll_s: float = 1.0
    dsn: str | None = None
    channel: str | None = None
    backoff: Backoff = field(default_factory=lambda: Backoff(0.05, 2.0))
    # after a wake-up, let this long pass before the step, so what is written meanwhile goes in the same round
    # (a relay off the money path: one claim, produce and mark for several wake-ups)
    gather_s: float = 0.0
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _stopping: bool = False

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        wakeups = Wakeups(self.dsn, self.channel, self._wake) if self.dsn and self.channel else None
        try:
            while not self._stopping:
                if wakeups is not None:
                    await wakeups.ensure()
                self._wake.clear()
                try:
                    due_in = await self.step()
                    self.backoff.reset()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    delay = self.backoff.next()
                    log.warning("worker step failed; retrying", worker=self.name, error=repr(exc), retry_in_s=delay)
                    await asyncio.sleep(delay)
                    continue
                if due_in is not None and due_in <= 0:
                    continue
                timeout = self.poll_s if due_in is None else min(max(due_in, 0.01), self.poll_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                    if self.gather_s > 0 and not self._stopping:
                        await asyncio.sleep(self.gather_s)
        finally:
            if wakeups is not None:
                await wakeups.close()
