"""Views that read a row and its children in several statements read them in one snapshot
(`returnflow.db.snapshot`): a commit made between two of its statements is not half seen."""

from __future__ import annotations

import asyncpg
import pytest

from returnflow.db import create_pool, snapshot


async def test_a_commit_between_two_reads_of_a_snapshot_is_not_seen(dsn: str) -> None:
    pool = await create_pool(dsn, "snapshot_test", "test", min_size=1, max_size=2)
    other = await asyncpg.connect(dsn)  # the writer: a connection of its own, in this task only
    try:
        await other.execute("CREATE SCHEMA IF NOT EXISTS snapshot_test")
        await other.execute("CREATE TABLE IF NOT EXISTS snapshot_test.items (n int)")
        await other.execute("INSERT INTO snapshot_test.items VALUES (1)")
        async with snapshot(pool) as db:
            before = await db.fetchval("SELECT count(*) FROM items")
            await other.execute("INSERT INTO snapshot_test.items VALUES (2)")  # committed now
            after = await db.fetchval("SELECT count(*) FROM items")
            with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
                await db.execute("INSERT INTO items VALUES (3)")
        assert (before, after) == (1, 1)
        assert await pool.fetchval("SELECT count(*) FROM items") == 2  # outside it, the commit is seen
    finally:
        await other.execute("DROP SCHEMA snapshot_test CASCADE")
        await other.close()
        await pool.close()
