"""The workbench's steps: sign a person in (their token checked by the service that issued it), keep their
session (a random id in the cookie, its hash and the sealed token here), and send their actions upstream
with their own token, so each one is attributed to them by the service that applies it."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from returnflow.logging import get_logger
from services.workbench import repository, rules
from services.workbench.settings import WorkbenchSettings
from services.workbench.upstream import Answer, Upstream

log = get_logger("workbench")


@dataclass
class WorkbenchContext:
    pool: asyncpg.Pool
    settings: WorkbenchSettings
    upstream: Upstream
    sealer: AESGCM
    # (filter, cursor, size) -> (until, the read): views.queue shares one read of the services per key
    queue_cache: dict[Any, tuple[float, asyncio.Future[Any]]] = field(default_factory=dict)

    @property
    def read_token(self) -> str | None:
        t = self.settings.read_token
        return t.get_secret_value() if t is not None else None


def sealer_for(settings: WorkbenchSettings) -> AESGCM:
    key = settings.session_key
    if key is None:
        raise SystemExit("returnflow: the workbench needs RETURNFLOW_WORKBENCH_SESSION_KEY (`returnflow up` sets one)")
    return AESGCM(hashlib.sha256(key.get_secret_value().encode()).digest())


# -- sealing the person's upstream token -----------------------------------------------------------------
def seal(sealer: AESGCM, token: str, person_id: str) -> bytes:
    """nonce (12 bytes) + AES-GCM(token), bound to the person (associated data): a sealed token moved to
    another person's row does not open."""
    nonce = os.urandom(12)
    return nonce + sealer.encrypt(nonce, token.encode(), person_id.encode())


def unseal(sealer: AESGCM, sealed: bytes, person_id: str) -> str:
    return sealer.decrypt(sealed[:12], sealed[12:], person_id.encode()).decode()


def session_hash(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


@dataclass(frozen=True)
class Session:
    person_id: str
    role: str
    token: str  # the person's own upstream token (unsealed for this request only)
    csrf_token: str
    limits: dict[str, int | None]
    id_hash: bytes


# -- sign-in ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Identity:
    person_id: str
    role: str
    limits: dict[str, int | None]


async def identify(up: Upstream, person_id: str, token: str) -> Identity | None:
    """Who holds this token, asked of each service that issues people's tokens (refunds' roster, audit's
    returns team, the warehouse's staff); the person must be the one they said. None otherwise."""
    roster, team, staff = await asyncio.gather(
        up.get("refunds", "/v1/refunds/whoami", token),
        up.get("audit", "/v1/audit/whoami", token),
        up.get("warehouse", "/v1/warehouse/whoami", token),
    )
    if roster.ok and roster.body.get("actor_id") == person_id and roster.body.get("role") in rules.DECIDERS:
        return Identity(person_id, roster.body["role"], dict(roster.body.get("limits") or {}))
    if team.ok and team.body.get("person_id") == person_id:
        return Identity(person_id, rules.RETURNS_TEAM, {})
    if staff.ok and staff.body.get("id") == person_id and staff.body.get("kind") == "staff":
        return Identity(person_id, rules.WAREHOUSE, {})
    return None


async def open_session(ctx: WorkbenchContext, who: Identity, token: str) -> str:
    """A new session for this person; the cookie's value (only its hash is stored)."""
    session_id = secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + timedelta(seconds=ctx.settings.session_ttl_s)
    await repository.insert_session(
        ctx.pool,
        session_hash(session_id),
        who.person_id,
        who.role,
        seal(ctx.sealer, token, who.person_id),
        secrets.token_urlsafe(24),
        who.limits,
        expires,
    )
    log.info("signed_in", person=who.person_id, role=who.role)
    return session_id


async def session_of(ctx: WorkbenchContext, session_id: str | None) -> Session | None:
    if not session_id or len(session_id) > 200:
        return None
    h = session_hash(session_id)
    row = await repository.live_session(ctx.pool, h)
    if row is None:
        return None
    try:
        token = unseal(ctx.sealer, bytes(row["sealed_token"]), row["person_id"])
    except Exception:  # another key (rotated) or a tampered row: not a session
        return None
    limits = row["limits"]
    limits = orjson.loads(limits) if isinstance(limits, str) else dict(limits or {})
    return Session(row["person_id"], row["role"], token, row["csrf_token"], limits, h)


async def close_session(ctx: WorkbenchContext, s: Session) -> None:
    await repository.delete_session(ctx.pool, s.id_hash)
    log.info("signed_out", person=s.person_id)


async def expire_sessions(ctx: WorkbenchContext) -> None:
    """Worker: drop expired sessions every few minutes (they are refused on read anyway)."""
    while True:
        try:
            await repository.delete_expired(ctx.pool)
        except Exception as exc:
            log.warning("session_expiry_failed", error=type(exc).__name__)
        await asyncio.sleep(300)


# -- actions, each with the person's own token -------------------------------------------------------------
async def decide(
    ctx: WorkbenchContext, s: Session, return_id: str, body: dict[str, Any], idem_key: str, cid: str
) -> Answer:
    return await ctx.upstream.call(
        "POST",
        "refunds",
        f"/v1/refunds/{return_id}/decisions",
        s.token,
        json=body,
        headers={"idempotency-key": idem_key},
        correlation_id=cid,
    )


async def post_check(ctx: WorkbenchContext, s: Session, body: dict[str, Any], cid: str) -> Answer:
    return await ctx.upstream.call("POST", "audit", "/v1/inventory/checks", s.token, json=body, correlation_id=cid)


async def resolve_discrepancy(ctx: WorkbenchContext, s: Session, discrepancy_id: str, note: str, cid: str) -> Answer:
    path = f"/v1/audit/discrepancies/{discrepancy_id}/resolution"
    return await ctx.upstream.call("POST", "audit", path, s.token, json={"note": note}, correlation_id=cid)


async def post_receipt(ctx: WorkbenchContext, s: Session, body: dict[str, Any], cid: str) -> Answer:
    return await ctx.upstream.call(
        "POST", "warehouse", "/v1/warehouse/receipts", s.token, json=body, correlation_id=cid
    )


async def resolve_clawback(
    ctx: WorkbenchContext, s: Session, clawback_id: str, resolution: str, note: str | None, cid: str
) -> Answer:
    body: dict[str, Any] = {"resolution": resolution} | ({"note": note} if note else {})
    path = f"/v1/refunds/clawbacks/{clawback_id}/resolution"
    return await ctx.upstream.call("POST", "refunds", path, s.token, json=body, correlation_id=cid)


async def resolve_failure(
    ctx: WorkbenchContext, s: Session, return_id: str, refund_id: str, action: str, note: str | None, cid: str
) -> Answer:
    body: dict[str, Any] = {"action": action, "refund_id": refund_id} | ({"note": note} if note else {})
    path = f"/v1/refunds/{return_id}/failures/resolution"
    return await ctx.upstream.call("POST", "refunds", path, s.token, json=body, correlation_id=cid)


async def post_replacement(ctx: WorkbenchContext, s: Session, body: dict[str, Any], cid: str) -> Answer:
    """An exchange's replacement handed to a courier, posted with the warehouse person's own token."""
    return await ctx.upstream.call(
        "POST", "warehouse", "/v1/warehouse/replacements", s.token, json=body, correlation_id=cid
    )


async def post_out_of_stock(ctx: WorkbenchContext, s: Session, body: dict[str, Any], cid: str) -> Answer:
    """No replacement in stock: the exchange goes to a person (the warehouse person's own token)."""
    return await ctx.upstream.call(
        "POST", "warehouse", "/v1/warehouse/replacements/out-of-stock", s.token, json=body, correlation_id=cid
    )
