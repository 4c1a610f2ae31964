"""Group commit: many concurrent requests, one PostgreSQL transaction.

Callers `await submit(item)`; a single writer task takes whatever is queued (up to `max_size`,
waiting at most `max_wait_s` for more once the first item arrives), runs `flush(conn, items)`
in one transaction and hands each caller its own result. If a batch fails, its items are tried
one by one so one bad item cannot fail the others.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import asyncpg

from returnflow.db import Conn
from returnflow.tracing import Scope, current_scope, in_scope

T = TypeVar("T")
R = TypeVar("R")

Flush = Callable[[Conn, Sequence[T]], Awaitable[Sequence[R]]]


class GroupCommitter(Generic[T, R]):
    def __init__(
        self,
        pool: asyncpg.Pool,
        flush: Flush[T, R],
        max_size: int = 200,
        max_wait_s: float = 0.002,
        after_commit: Callable[[], None] | None = None,
        writers: int = 2,
    ) -> None:
        self.pool = pool
        self.flush = flush
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self.after_commit = after_commit
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R], Scope | None]] = asyncio.Queue()
        self._tasks = [asyncio.create_task(self._run()) for _ in range(writers)]

    async def submit(self, item: T) -> R:
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        # the caller's trace context goes with the item: its events are written by the writer task
        await self._queue.put((item, fut, current_scope()))
        return await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait_s
            while len(batch) < self.max_size:
                try:
                    batch.append(self._queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            await self._commit(batch)

    async def _commit(self, batch: list[tuple[T, asyncio.Future[R], Scope | None]]) -> None:
        scope: Scope = {}
        for _, _, s in batch:
            if s:
                scope.update(s)
        try:
            with in_scope(scope or None):
                results = await self._transaction([item for item, _, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                _, fut, _ = batch[0]
                if not fut.done():
                    fut.set_exception(exc)
                return
            for one in batch:
                await self._commit([one])
            return
        for (_, fut, _), res in zip(batch, results, strict=True):
            if not fut.done():
                fut.set_result(res)
        if self.after_commit is not None:
            self.after_commit()

    async def _transaction(self, items: list[T]) -> Sequence[R]:
        async with self.pool.acquire() as conn, conn.transaction():
            return await self.flush(conn, items)

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        while not self._queue.empty():
            _, fut, _ = self._queue.get_nowait()
            if not fut.done():
                fut.set_exception(RuntimeError("service is stopping"))
