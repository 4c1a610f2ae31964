"""The embedded database analyzes its growing tables sooner than PostgreSQL's default (apphost/stack.py)."""

from __future__ import annotations

import asyncpg

from apphost.stack import EMBEDDED_POSTGRES_SETTINGS, tune_embedded_postgres
from tests.kafkautil import wait_for


async def test_the_embedded_database_looks_for_tables_to_analyze_every_few_seconds(dsn: str) -> None:
    await tune_embedded_postgres(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        for name, value in EMBEDDED_POSTGRES_SETTINGS.items():
            # a reload reaches a session at its next command
            await wait_for(lambda n=name, v=value: _shows(conn, n, v))
    finally:
        await conn.close()


async def _shows(conn: asyncpg.Connection, name: str, value: str) -> bool:
    return bool(await conn.fetchval(f"SHOW {name}") == value)
