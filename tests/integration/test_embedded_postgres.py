"""The embedded database analyzes its growing tables sooner than PostgreSQL's default (apphost/stack.py)."""

from __future__ import annotations

import asyncio

import asyncpg

from apphost.stack import EMBEDDED_POSTGRES_SETTINGS, tune_embedded_postgres


async def test_the_embedded_database_looks_for_tables_to_analyze_every_few_seconds(dsn: str) -> None:
    await tune_embedded_postgres(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        for name, value in EMBEDDED_POSTGRES_SETTINGS.items():
            shown = None
            for _ in range(100):  # a reload reaches a session at its next command
                shown = await conn.fetchval(f"SHOW {name}")
                if shown == value:
                    break
                await asyncio.sleep(0.05)
            assert shown == value, (name, shown)
    finally:
        await conn.close()
