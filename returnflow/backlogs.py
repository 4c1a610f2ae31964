"""Business backlogs as gauges: what a service holds waiting for something (a payment's answer, a person, a
parcel, an SMS provider), counted from its own tables on a slow loop.

A service names its backlogs in its SPEC (`backlogs=views.backlogs`): one cheap read-side query (given the
shops file in force, for per-shop thresholds) returning a
`Backlog` per name, always the same names (an empty backlog is `Backlog(name, 0, 0.0)`, so a gauge falls
back to 0 instead of keeping its last value). The runtime refreshes `returnflow_backlog_items` and
`returnflow_backlog_oldest_age_seconds` every `backlog_interval_s` and reports whether the database
answered as `returnflow_dependency_up{dependency="database"}`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from returnflow import metrics
from returnflow.consumer import INFRA_ERRORS
from returnflow.db import Conn
from returnflow.logging import get_logger
from returnflow.shops import Shops

log = get_logger("returnflow.backlogs")


@dataclass(frozen=True)
class Backlog:
    name: str
    items: int
    oldest_age_s: float

    @classmethod
    def of(cls, name: str, row: asyncpg.Record | Sequence[Any] | None) -> Backlog:
        """From a row `(items, oldest_age_s)`; `oldest_age_s` NULL when the backlog is empty."""
        if row is None:
            return cls(name, 0, 0.0)
        return cls(name, int(row[0] or 0), max(0.0, float(row[1] or 0.0)))


def backlogs_of(names: Sequence[str], row: asyncpg.Record | None) -> list[Backlog]:
    """From one row holding `(items, oldest_age_s)` for each name in turn."""
    return [Backlog.of(name, None if row is None else row[2 * i : 2 * i + 2]) for i, name in enumerate(names)]


UNREACHABLE: tuple[type[Exception], ...] = (*INFRA_ERRORS, OSError, TimeoutError)
BacklogQuery = Callable[[Conn, Shops], Awaitable[Sequence[Backlog]]]


def publish(service: str, backlogs: Sequence[Backlog]) -> None:
    for b in backlogs:
        metrics.BACKLOG_ITEMS.labels(service, b.name).set(b.items)
        metrics.BACKLOG_OLDEST_AGE.labels(service, b.name).set(b.oldest_age_s)


async def refresh(
    service: str, pool: asyncpg.Pool, query: BacklogQuery | None, shops: Shops | None = None, timeout_s: float = 5.0
) -> bool:
    """One round: count the backlogs (if the service has any) and record whether PostgreSQL answered."""
    try:
        async with pool.acquire(timeout=timeout_s) as conn:
            if query is None:
                await conn.fetchval("SELECT 1", timeout=timeout_s)
            else:
                async with conn.transaction(readonly=True):
                    await conn.execute(f"SET LOCAL statement_timeout = {int(timeout_s * 1000)}")
                    publish(service, await query(conn, shops or Shops()))
    except UNREACHABLE as exc:
        metrics.DEPENDENCY_UP.labels(service, "database").set(0)
        log.warning("backlogs not refreshed: database unreachable", error=repr(exc))
        return False
    except Exception as exc:  # the database answered; the query is wrong: say so, keep the loop
        metrics.DEPENDENCY_UP.labels(service, "database").set(1)
        log.error("backlogs not refreshed: the query failed", error=repr(exc))
        return False
    metrics.DEPENDENCY_UP.labels(service, "database").set(1)
    return True
