"""The workbench's sessions in its own schema on a real PostgreSQL: only the hash of the cookie's id and
the sealed token are stored, an expired session opens nothing, sign-out deletes it, a row sealed under
another key (a rotated RETURNFLOW_WORKBENCH_SESSION_KEY) or moved to another person does not open."""

from __future__ import annotations

from pydantic import SecretStr

from returnflow import db
from services.workbench import SPEC, handlers, repository
from services.workbench.handlers import Identity, WorkbenchContext
from services.workbench.settings import WorkbenchSettings
from services.workbench.upstream import Upstream


async def context(dsn: str, key: str = "test-session-key", ttl_s: float = 3600.0) -> WorkbenchContext:
    await db.migrate(dsn, SPEC.schema, SPEC.migrations())
    pool = await db.create_pool(dsn, SPEC.schema, "test", 1, 2)
    s = WorkbenchSettings(session_key=SecretStr(key), session_ttl_s=ttl_s)
    return WorkbenchContext(pool, s, Upstream(s), handlers.sealer_for(s))


async def test_a_session_holds_no_secret_in_the_clear_and_ends_at_sign_out_or_expiry(dsn):
    ctx = await context(dsn)
    try:
        amy = Identity("agent-amy", "agent", {"*": 2000})
        sid = await handlers.open_session(ctx, amy, "dev-token-agent-amy")
        s = await handlers.session_of(ctx, sid)
        assert s is not None and (s.person_id, s.role, s.token, s.limits) == (
            "agent-amy",
            "agent",
            "dev-token-agent-amy",
            {"*": 2000},
        )
        row = await ctx.pool.fetchrow("SELECT * FROM sessions")
        stored = b"".join(v if isinstance(v, bytes) else str(v).encode() for v in row.values())
        assert sid.encode() not in stored and b"dev-token-agent-amy" not in stored
        assert await handlers.session_of(ctx, sid + "x") is None and await handlers.session_of(ctx, None) is None

        await handlers.close_session(ctx, s)
        assert await handlers.session_of(ctx, sid) is None

        expired = await handlers.open_session(ctx, amy, "dev-token-agent-amy")
        await ctx.pool.execute("UPDATE sessions SET expires_at = now() - interval '1 second'")
        assert await handlers.session_of(ctx, expired) is None
        assert await repository.delete_expired(ctx.pool) == 1

        moved = await handlers.open_session(ctx, amy, "dev-token-agent-amy")
        await ctx.pool.execute("UPDATE sessions SET person_id = 'owner-oz'")  # a row edited to another person
        assert await handlers.session_of(ctx, moved) is None
    finally:
        await ctx.upstream.close()
        await ctx.pool.close()


async def test_a_new_session_key_signs_everyone_out(dsn):
    old = await context(dsn, key="key-one")
    sid = await handlers.open_session(old, Identity("rt-lin", "returns_team", {}), "dev-audit-token-lin")
    await old.upstream.close()
    await old.pool.close()
    new = await context(dsn, key="key-two")
    try:
        assert await handlers.session_of(new, sid) is None
    finally:
        await new.upstream.close()
        await new.pool.close()
