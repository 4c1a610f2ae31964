"""The processes a benchmark starts: wait until one answers over HTTP, and read what CPU it used."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterable

import httpx
import psutil


async def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    """Until `url` answers 200; SystemExit if the process exits first or the time runs out."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient() as c:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit("service exited during start")
            try:
                if (await c.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.05)
    raise SystemExit("service not ready")


def tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants (a multi-worker service, a PostgreSQL postmaster)."""
    p = psutil.Process(pid)
    return [p, *p.children(recursive=True)]


def cpu_seconds_of(procs: Iterable[psutil.Process]) -> float:
    """User + system CPU of these processes (one that ended since it was listed, e.g. a PostgreSQL backend
    whose connection closed, counts as nothing: a bench run failed on one)."""
    total = 0.0
    for p in procs:
        try:
            total += sum(p.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children."""
    return cpu_seconds_of(tree(pid))
