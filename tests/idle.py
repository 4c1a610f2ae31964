"""The idle barrier: wait until services have nothing left to do, instead of sleeping to prove that
nothing more happens. A service is idle when each of its consumer groups has committed to the end of
its partitions and its outbox is drained (`Runtime.idle`, served as `GET /idlez`). Services feed each
other, so the barrier holds only when all of them are idle in the same round, twice in a row."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx

Probe = Callable[[], Awaitable[dict[str, Any]]]


async def _barrier(probes: Sequence[Probe], timeout_s: float, rounds: int) -> None:
    deadline = time.monotonic() + timeout_s
    quiet = 0
    last: list[dict[str, Any]] = []
    while quiet < rounds:
        last = [await probe() for probe in probes]
        quiet = quiet + 1 if all(r["idle"] for r in last) else 0
        if quiet >= rounds:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"services still busy after {timeout_s:.0f}s: {[r for r in last if not r['idle']]}")
        await asyncio.sleep(0.05)


async def wait_idle(*services: Any, timeout_s: float = 30.0, rounds: int = 2) -> None:
    """Services run in this process (tests.conftest.RunningService or a Runtime)."""
    runtimes = [getattr(s, "runtime", s) for s in services]
    await _barrier([rt.idle for rt in runtimes], timeout_s, rounds)


async def wait_idle_http(base_urls: Sequence[str], timeout_s: float = 60.0, rounds: int = 2) -> None:
    """Services run as processes (the `returnflow up` stack): asks each one's /idlez."""
    async with httpx.AsyncClient(timeout=5.0) as client:

        def probe(url: str) -> Probe:
            async def ask() -> dict[str, Any]:
                r = await client.get(f"{url}/idlez")
                return dict(r.json()) if r.status_code == 200 else {"idle": False, "status": r.status_code}

            return ask

        await _barrier([probe(u) for u in base_urls], timeout_s, rounds)


async def wait_consumers_idle(*services: Any, timeout_s: float = 30.0, rounds: int = 2) -> None:
    """Like `wait_idle`, but the services' background workers may still have work (a retry under way): every
    consumer group has committed to the end of its partitions and the outbox is drained."""
    runtimes = [getattr(s, "runtime", s) for s in services]

    def consumers_only(rt: Any) -> Probe:
        async def ask() -> dict[str, Any]:
            report = await rt.idle()
            waiting = [w for w in report["waiting"] if w != "workers"]
            return {"idle": not waiting, "waiting": waiting}

        return ask

    await _barrier([consumers_only(rt) for rt in runtimes], timeout_s, rounds)
