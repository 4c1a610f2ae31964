"""`returnflow roster seed [FILE]` puts actors and their roles in the refunds roster; `roster list` shows it.

FILE is a JSON list of {"actor_id", "role", "name", "token", "public_key", "active"}: `token` is the
person's bearer token for the HTTP API (and `returnflow login`), `public_key` the Ed25519 public key
(base64 of 32 bytes) that checks the commands they sign on refunds.commands; either left out keeps the
one on file. Without FILE, the development roster (agent-amy, agent-bo, sup-sam, mgr-mia, owner-oz with
dev-token-<id> tokens and keys derived from dev-key-<id>) is seeded, as `make run` does. Works against
RETURNFLOW_DATABASE_URL, or the embedded PostgreSQL under the data dir (attached to if `returnflow up` is
running, started and stopped again if not).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from apphost.embedded import EmbeddedPostgres
from returnflow import db
from returnflow.settings import Settings
from services.refunds import SPEC, repository
from services.refunds.dev import DEV_ROSTER
from services.refunds.repository import RosterEntry
from services.refunds.settings import RefundsSettings


def load_entries(path: str | None) -> list[RosterEntry]:
    if path is None:
        return list(DEV_ROSTER)
    try:
        return TypeAdapter(list[RosterEntry]).validate_python(json.loads(Path(path).read_text()))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SystemExit(f"returnflow: roster file {path}: entry {where}: {first['msg']}") from None
    except (OSError, ValueError) as exc:
        raise SystemExit(f"returnflow: cannot read roster file {path}: {exc}".splitlines()[0]) from None


async def _dsn(settings: Settings) -> str:
    if settings.database_url:
        dsn = settings.database_url.get_secret_value()
    else:
        pg = EmbeddedPostgres(settings.data_dir / "postgres")
        pg.start()  # attaches to the running one; stopped at exit only if this process started it
        dsn = pg.uri("returnflow")
        await db.ensure_database(dsn)
    await db.migrate(dsn, SPEC.schema, SPEC.migrations())
    return dsn


async def seed(settings: Settings, path: str | None) -> list[RosterEntry]:
    entries = load_entries(path)
    conn = await db.connect(await _dsn(settings), SPEC.schema)
    try:
        async with conn.transaction():
            await repository.seed_roster(conn, entries)
    finally:
        await conn.close()
    return entries


def seed_cmd(settings: Settings, path: str | None) -> int:
    entries = asyncio.run(seed(settings, path))
    for e in entries:
        key = "key" if e.public_key else "no key"
        print(f"  {e.actor_id:<12} {e.role.value:<10} {'active' if e.active else 'inactive':<9} {key}")
    print(f"roster: {len(entries)} actor(s) seeded")
    return 0


async def listing(settings: Settings) -> list[dict[str, Any]]:
    conn = await db.connect(await _dsn(settings), SPEC.schema)
    try:
        return await repository.roster(conn)
    finally:
        await conn.close()


def list_cmd(settings: Settings) -> int:
    rows = asyncio.run(listing(settings))
    print(f"  {'actor':<14} {'role':<11} {'name':<20} {'command key (Ed25519, - = HTTP only)':<45} status")
    for r in rows:
        print(
            f"  {r['actor_id']!s:<14} {r['role']!s:<11} {r['display_name'] or '':<20} {r['public_key'] or '-':<45} "
            f"{'active' if r['active'] else 'inactive'}"
        )
    preset = RefundsSettings.load().authority_preset
    print(f"roster: {len(rows)} actor(s); roles come from here, never from a request (preset {preset})")
    return 0
