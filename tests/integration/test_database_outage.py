"""Loops whose PostgreSQL restarts carry on. A consumer waits for it: the embedded server listens on a Unix socket
that is gone while it restarts, and asyncpg then raises a bare FileNotFoundError. That must read as
"database unavailable" (wait, retry), never as a failing message to dead-letter (the chaos drill caught
a refunds.issued event dead-lettered this way during a PostgreSQL restart). And the LISTEN connections
that wake the relay, the payment worker and the SMS sender are opened again afterwards; and a webhook that
arrives meanwhile is answered 503 + Retry-After (retry later), not 500. An SMS the provider accepted just
before the outage is recorded once the database is back, not sent a second time."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from contracts.events import TrackingRegistered
from returnflow import db, metrics
from returnflow.consumer import INFRA_ERRORS, Delivery, IdempotentConsumer
from services.notify import SPEC as NOTIFY
from services.returns import SPEC
from tests.conftest import serve
from tests.idle import wait_idle
from tests.integration.fake_sms_providers import FakeTwilio, serve_app
from tests.integration.notify_support import notify_settings, publish, requested
from tests.kafkautil import wait_for
from tests.webhooks import return_body, signed

SOCKET = re.compile(r"host=([^&]+)")


def waits(consumer: str) -> float:
    """How often a consumer found the database unreachable and waited (returnflow_consumer_database_waits_total)."""
    return metrics.DATABASE_WAITS.labels(consumer)._value.get()


async def _true(value: bool) -> bool:
    return value


def socket_dir(dsn: str) -> Path:
    m = SOCKET.search(dsn)
    assert m, f"the embedded server is expected on a Unix socket: {dsn}"
    return Path(m.group(1))


def show_server(dsn: str, folder: Path) -> None:
    """Make the server reachable through `folder`: link its socket there."""
    for sock in socket_dir(dsn).glob(".s.PGSQL.*"):
        if not sock.name.endswith(".lock"):
            os.symlink(sock, folder / sock.name)


def hide_server(folder: Path) -> None:
    """What a restart does to the socket: it is gone."""
    for link in folder.glob(".s.PGSQL.*"):
        link.unlink()


async def end_sessions(admin: asyncpg.Connection) -> int:
    """What a restart does to the sessions: the server ends every one but the caller's."""
    ended: int = await admin.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE pid <> pg_backend_pid() AND datname = current_database()"
    )
    return ended


async def test_unreachable_database_is_an_infrastructure_error(dsn, tmp_path):
    gone = SOCKET.sub(f"host={tmp_path / 'no-server-here'}", dsn)
    pool = await db.create_pool(gone, "public", "probe", min_size=0, max_size=1)
    try:
        with pytest.raises(db.DatabaseUnavailable) as caught:
            async with pool.acquire():
                pass
        assert isinstance(caught.value, INFRA_ERRORS)
        assert isinstance(caught.value.__cause__, FileNotFoundError)
    finally:
        await pool.close()


async def test_consumer_waits_for_the_database_and_applies_the_batch_once_it_is_back(dsn, tmp_path):
    await db.migrate(dsn, "public", db.load_migrations("runtime", db.RUNTIME_MIGRATIONS))
    admin = await db.connect(dsn, "public")
    await admin.execute("CREATE TABLE seen (event_id text PRIMARY KEY)")

    # The consumer's pool looks for the server's socket in a folder where it is not (yet).
    later = tmp_path / "sockets"
    later.mkdir()
    pool = await db.create_pool(SOCKET.sub(f"host={later}", dsn), "public", "probe", min_size=0, max_size=2)

    async def handle(conn, batch: list[Delivery]) -> None:
        await conn.executemany("INSERT INTO seen VALUES ($1)", [(d.dedupe_id,) for d in batch])

    event = TrackingRegistered(
        occurred_at=datetime.now(UTC), return_id=uuid.uuid4(), correlation_id="corr-outage", tracking_no="SF1"
    )
    delivery = Delivery(
        topic="returns.tracking-registered",
        partition=0,
        offset=7,
        key=None,
        value=event.model_dump_json().encode(),
        headers={},
        event=event,
        dedupe_id=str(event.event_id),
    )
    consumer = IdempotentConsumer(name="c", pool=pool, handler=handle, backoff_base_s=0.01, backoff_max_s=0.05)
    try:
        waited_before = waits("c")
        task = asyncio.create_task(consumer.process([delivery]))
        # it keeps waiting for the database (five rounds of its backoff), and gives up on nothing
        await wait_for(lambda: _true(waits("c") >= waited_before + 5 or task.done()))
        assert not task.done(), f"gave up while the database was unreachable: {task.exception()!r}"

        # The server "comes back": its socket appears where the pool looks.
        show_server(dsn, later)
        await asyncio.wait_for(task, 15)

        assert await admin.fetchval("SELECT count(*) FROM seen WHERE event_id = $1", str(event.event_id)) == 1
        assert await admin.fetchval("SELECT count(*) FROM dead_letters") == 0
    finally:
        await pool.close()
        await admin.close()


async def test_wakeups_listen_again_after_their_connection_is_gone(dsn):
    wake = asyncio.Event()
    wakeups = db.Wakeups(dsn, "probe_channel", wake)
    admin = await db.connect(dsn, "public")
    try:
        await wakeups.ensure()
        await admin.execute("NOTIFY probe_channel")
        await asyncio.wait_for(wake.wait(), 5)

        # What a restart does to it: the server ends the session.
        assert await end_sessions(admin) == 1
        for _ in range(50):
            if wakeups._conn is None or wakeups._conn.is_closed():
                break
            await asyncio.sleep(0.05)
        wake.clear()
        await wakeups.ensure()
        await admin.execute("NOTIFY probe_channel")
        await asyncio.wait_for(wake.wait(), 5)
    finally:
        await wakeups.close()
        await admin.close()


async def test_webhook_while_the_database_is_away_gets_503_and_is_accepted_when_retried(dsn, settings, tmp_path):
    here = tmp_path / "sockets"
    here.mkdir()
    show_server(dsn, here)
    through = settings.model_copy(update={"database_url": SecretStr(SOCKET.sub(f"host={here}", dsn))})
    admin = await db.connect(dsn, "returns")
    url = "/v1/webhooks/generic/returns"
    try:
        async with serve(SPEC, through) as svc, httpx.AsyncClient(base_url=svc.base_url) as client:
            raw, hdrs = signed(return_body())
            first = await client.post(url, content=raw, headers=hdrs)
            assert first.status_code == 202, first.text

            # The database goes away: its socket is gone and its sessions are ended.
            hide_server(here)
            await end_sessions(admin)
            raw, hdrs = signed(return_body())
            away = await client.post(url, content=raw, headers=hdrs)
            assert away.status_code == 503, away.text
            assert away.headers["retry-after"] == "1"
            assert "retry" in away.json()["detail"]

            # It is back: the platform's retry of the same delivery is accepted.
            show_server(dsn, here)
            back = await client.post(url, content=raw, headers=hdrs)
            assert back.status_code == 202, back.text
            assert await admin.fetchval("SELECT count(*) FROM returns") == 2
    finally:
        await admin.close()


class TwilioThenOutage(FakeTwilio):
    """Twilio that accepts the first message and, before answering, takes the database away for a while
    (longer than the send lease): the outcome of that send cannot be written until it is back."""

    def __init__(self, outage) -> None:
        super().__init__()
        self.outage = outage

    async def messages(self, request):
        response = await super().messages(request)
        if response.status_code == 201 and self.outage is not None:
            outage, self.outage = self.outage, None
            await outage()
        return response


async def test_sms_accepted_before_an_outage_longer_than_its_lease_is_sent_once(dsn, settings, tmp_path):
    here = tmp_path / "sockets"
    here.mkdir()
    show_server(dsn, here)
    lease_s, outage_s = 1.0, 3.0

    async def outage() -> None:
        # Its own session (never one shared with the poller below: two tasks on one asyncpg connection
        # fail with "another operation is in progress" when the CPU is busy); the server's own socket.
        admin = await db.connect(dsn, "notify")
        try:
            hide_server(here)
            await end_sessions(admin)
        finally:
            await admin.close()
        asyncio.get_running_loop().call_later(outage_s, show_server, dsn, here)

    async def recorded(return_id: uuid.UUID) -> bool:
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            conn = await db.connect(dsn, "notify")  # a session of its own each time: the outage ends them all
            try:
                status = await conn.fetchval(
                    "SELECT status FROM messages WHERE return_id = $1 AND step = 'requested'", return_id
                )
                return status == "sent"
            finally:
                await conn.close()
        return False

    fake = TwilioThenOutage(outage)
    async with serve_app(fake.app()) as twilio_url:
        s = notify_settings(
            settings.model_copy(update={"database_url": SecretStr(SOCKET.sub(f"host={here}", dsn))}),
            provider="twilio",
            twilio_account_sid=fake.account_sid,
            twilio_auth_tokens=[SecretStr(fake.auth_token)],
            twilio_from="+15005550006",
            twilio_base_url=twilio_url,
            send_lease_s=lease_s,
        )
        ret = requested(locale="en", phone="+8613811112222")
        async with serve(NOTIFY, *s) as svc:
            await publish(s.kafka_bootstrap, [ret])
            await wait_for(lambda: recorded(ret.return_id), timeout_s=30)
            await wait_idle(svc, timeout_s=30)  # nothing due or being sent (the lease ran out long ago)
            assert len(fake.accepted) == 1, [a["Body"] for a in fake.accepted]
