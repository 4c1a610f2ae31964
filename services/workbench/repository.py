"""SQL of the workbench's own schema: people's sessions. Nothing decided here."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import orjson


async def insert_session(
    pool: asyncpg.Pool,
    id_hash: bytes,
    person_id: str,
    role: str,
    sealed_token: bytes,
    csrf_token: str,
    limits: dict[str, Any],
    expires_at: datetime,
) -> None:
    await pool.execute(
        """INSERT INTO sessions (id_hash, person_id, role, sealed_token, csrf_token, limits, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)""",
        id_hash,
        person_id,
        role,
        sealed_token,
        csrf_token,
        orjson.dumps(limits).decode(),
        expires_at,
    )


async def live_session(pool: asyncpg.Pool, id_hash: bytes) -> asyncpg.Record | None:
    """The session with this id hash, unless it expired."""
    return await pool.fetchrow(
        """SELECT person_id, role, sealed_token, csrf_token, limits, expires_at FROM sessions
           WHERE id_hash = $1 AND expires_at > now()""",
        id_hash,
    )


async def delete_session(pool: asyncpg.Pool, id_hash: bytes) -> None:
    await pool.execute("DELETE FROM sessions WHERE id_hash = $1", id_hash)


async def delete_expired(pool: asyncpg.Pool) -> int:
    status = await pool.execute("DELETE FROM sessions WHERE expires_at <= now()")
    return int(status.split()[-1])
