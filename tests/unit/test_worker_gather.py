"""A worker that gathers (`Worker.gather_s`, the relay's `relay_gather_ms`) takes what several wake-ups
announced in one round; one that does not takes each at its own round."""

from __future__ import annotations

import asyncio

from returnflow.loops import Worker


async def rounds_for(gather_s: float) -> list[list[int]]:
    pending: list[int] = []
    rounds: list[list[int]] = []
    stepped = asyncio.Event()

    async def step() -> None:
        if pending:
            rounds.append(list(pending))
            pending.clear()
        stepped.set()

    worker = Worker("test", step, poll_s=60.0, gather_s=gather_s)
    task = asyncio.create_task(worker.run())
    await stepped.wait()  # the first round (nothing pending) is done; the worker waits for a wake-up
    for item in (1, 2):
        stepped.clear()
        pending.append(item)
        worker.wake()
        if gather_s == 0:
            await stepped.wait()  # its own round
        else:
            await asyncio.sleep(0.05)  # well inside the gathering window
    await asyncio.wait_for(stepped.wait(), 10)
    worker.stop()
    await task
    return rounds


async def test_a_gathering_worker_takes_two_wake_ups_in_one_round() -> None:
    assert await rounds_for(gather_s=1.0) == [[1, 2]]


async def test_a_worker_that_does_not_gather_takes_each_wake_up_at_once() -> None:
    assert await rounds_for(gather_s=0.0) == [[1], [2]]
