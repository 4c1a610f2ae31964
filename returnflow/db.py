"""asyncpg pool per service (its own schema) and SQL migrations with a version table."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

#: A connection, pooled or not: what handlers and storage functions receive.
Conn = asyncpg.Connection | PoolConnectionProxy

RUNTIME_MIGRATIONS = Path(__file__).parent / "migrations"
_NAME = re.compile(r"^(\d{3,})_[\w-]+\.sql$")


class DatabaseUnavailable(ConnectionError):
    """PostgreSQL could not be reached: refused, timed out, or its Unix socket gone while it restarts
    (asyncpg raises the bare OSError, e.g. FileNotFoundError, which would otherwise read as a bug)."""


async def _open(*args: Any, **kwargs: Any) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(*args, **kwargs)
    except (OSError, TimeoutError) as exc:
        raise DatabaseUnavailable(f"cannot reach PostgreSQL: {exc!r}") from exc


class Wakeups:
    """A LISTEN connection that sets `wake` on every NOTIFY on `channel`. `ensure()` (re)opens it and is
    called each round of a loop: after a database restart the old connection is closed and the loop
    would otherwise fall back to polling for good. Without it a loop still works, by polling."""

    def __init__(self, dsn: str, channel: str, wake: asyncio.Event) -> None:
        self.dsn = dsn
        self.channel = channel
        self.wake = wake
        self._conn: asyncpg.Connection | None = None

    async def ensure(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            return
        await self.close()
        with contextlib.suppress(Exception):  # the database is away: poll meanwhile, try next round
            conn = await _open(self.dsn)
            await conn.add_listener(self.channel, lambda *_: self.wake.set())
            self._conn = conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


@dataclass(frozen=True)
class Migration:
    track: str
    version: int
    name: str
    sql: str


def load_migrations(track: str, folder: Path) -> list[Migration]:
    found = []
    for path in sorted(folder.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise ValueError(f"migration file name must look like 001_name.sql: {path}")
        found.append(Migration(track, int(m.group(1)), path.name, path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration versions in {folder}")
    return found


def migrations_for(schema: str, service_folder: Path) -> list[Migration]:
    return load_migrations("runtime", RUNTIME_MIGRATIONS) + load_migrations(schema, service_folder / "migrations")


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("jsonb", "json"):
        await conn.set_type_codec(
            typ, encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads, schema="pg_catalog"
        )


async def connect(dsn: str, schema: str, **kwargs: Any) -> asyncpg.Connection:
    conn = await _open(dsn, server_settings={"search_path": f"{schema},public"}, **kwargs)
    await _init_connection(conn)
    return conn


@contextlib.asynccontextmanager
async def snapshot(pool: asyncpg.Pool) -> AsyncIterator[Conn]:
    """A connection whose reads all see one moment (a read-only repeatable-read transaction): a view that
    reads a row and its children in several statements shows them as they were together, never a commit
    of a consumer's batch half-way between them."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        yield conn


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without asyncpg's reset query (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL): pooled
    connections carry no session state here (locks are transaction-scoped, LISTEN has connections of
    its own, nothing SETs outside a transaction), and the query cost a round trip on every release.
    asyncpg still rolls back a transaction left open."""


async def create_pool(dsn: str, schema: str, service: str, min_size: int, max_size: int) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        connect=_open,
        init=_init_connection,
        reset=_keep_session,
        server_settings={"search_path": f"{schema},public", "application_name": f"returnflow-{service}"},
    )
    assert pool is not None
    return pool


async def ensure_database(dsn: str) -> None:
    """Create the database named in `dsn` if it does not exist (connects to `postgres`)."""
    target = dsn_database(dsn)
    admin = re.sub(r"(postgres(?:ql)?://[^/]*/)([^?]*)", r"\1postgres", dsn, count=1)
    conn = await asyncpg.connect(admin)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", target)
        if not exists:
            try:
                await conn.execute(f'CREATE DATABASE "{target}"')
            except asyncpg.DuplicateDatabaseError:
                pass
    finally:
        await conn.close()


def dsn_database(dsn: str) -> str:
    m = re.match(r"postgres(?:ql)?://[^/]*/([^?]*)", dsn)
    return (m.group(1) if m else "") or "postgres"


async def migrate(dsn: str, schema: str, migrations: list[Migration]) -> list[str]:
    """Apply pending migrations in one transaction each, under an advisory lock. Returns names applied."""
    conn = await asyncpg.connect(dsn)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock(hashtext($1))", f"returnflow-migrate-{schema}")
        try:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            await conn.execute(
                f"""CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations (
                    track text NOT NULL, version int NOT NULL, name text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (track, version))"""
            )
            done = {
                (r["track"], r["version"])
                for r in await conn.fetch(f'SELECT track, version FROM "{schema}".schema_migrations')
            }
            for m in migrations:
                if (m.track, m.version) in done:
                    continue
                async with conn.transaction():
                    await conn.execute(f'SET LOCAL search_path TO "{schema}", public')
                    await conn.execute(m.sql)
                    await conn.execute(
                        f'INSERT INTO "{schema}".schema_migrations (track, version, name) VALUES ($1, $2, $3)',
                        m.track,
                        m.version,
                        m.name,
                    )
                applied.append(f"{m.track}/{m.name}")
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", f"returnflow-migrate-{schema}")
    finally:
        await conn.close()
    return applied


async def pending_migrations(pool: asyncpg.Pool, migrations: list[Migration]) -> list[str]:
    rows = await pool.fetch("SELECT track, version FROM schema_migrations")
    done = {(r["track"], r["version"]) for r in rows}
    return [f"{m.track}/{m.name}" for m in migrations if (m.track, m.version) not in done]
