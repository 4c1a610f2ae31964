"""The audit log anchored outside PostgreSQL, on the real broker and PostgreSQL: a database superuser
rewrites an entry and recomputes every later hash (the chain is consistent again, so the internal
check passes), and `returnflow audit verify` catches it against the anchors published on
audit.anchors and shipped to the anchors file, naming the first rewritten entry."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg

from services.audit import SPEC, chain
from tests.idle import wait_idle
from tests.integration.test_audit_dual_check import (
    attested,
    audit_settings,
    check_command,
    produce,
    requested,
    run_cli,
)
from tests.kafkautil import wait_for


async def rewrite_and_recompute(dsn: str, seq: int) -> None:
    """What a superuser can do: switch the append-only triggers off, forge entry `seq`'s quantity and
    recompute every later hash so the chain links up again."""
    su = await asyncpg.connect(dsn)
    try:
        assert await su.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        async with su.transaction():
            await su.execute("SET LOCAL session_replication_role = replica")
            rows = await su.fetch(
                "SELECT seq, content, prev_hash FROM audit.audit_log WHERE seq >= $1 ORDER BY seq", seq
            )
            prev = rows[0]["prev_hash"]
            for r in rows:
                content = r["content"]
                if r["seq"] == seq:
                    content = content.replace('"quantity":1', '"quantity":7')
                    assert content != r["content"]
                h = chain.entry_hash(prev, content)
                await su.execute(
                    "UPDATE audit.audit_log SET content = $2, prev_hash = $3, hash = $4 WHERE seq = $1",
                    r["seq"],
                    content,
                    prev,
                    h,
                )
                prev = h
    finally:
        await su.close()


async def test_a_superuser_rewrite_is_caught_by_the_published_anchors(settings, service_runner, tmp_path: Path):
    rid = uuid.uuid4()
    anchors_file = tmp_path / "shipped" / "anchors.jsonl"
    service_settings = audit_settings(anchor_file=str(anchors_file), anchor_interval_s=3600.0)
    dsn = settings.database_url.get_secret_value()
    async with service_runner(SPEC, settings, service_settings) as svc:
        pool = svc.runtime.pool
        await produce(
            settings.kafka_bootstrap,
            [requested(rid, {"A": 1, "B": 1}), attested(rid, "A", "restock", 1), attested(rid, "B", "destroy", 1)],
        )
        await wait_for(lambda: pool.fetchval("SELECT count(*) = 2 FROM audit_log"))
        await produce(
            settings.kafka_bootstrap,
            [check_command(rid, "A", "restock", 1, "rt-ana"), check_command(rid, "B", "destroy", 1, "rt-ana")],
        )
        await wait_for(lambda: pool.fetchval("SELECT count(*) = 6 FROM audit_log"))
        await wait_idle(svc)  # every anchor published by the relay and written to the file

        topic = ("--anchors-topic", "--bootstrap", settings.kafka_bootstrap)
        file = ("--anchors-file", str(anchors_file))
        ok = await asyncio.to_thread(run_cli, settings, "verify", *topic, *file)
        assert ok.returncode == 0, ok.stderr
        assert "audit log intact: 6 entries" in ok.stdout and "matches 6 anchored entries" in ok.stdout

        await rewrite_and_recompute(dsn, 3)

        unanchored = await asyncio.to_thread(run_cli, settings, "verify")  # the chain alone is consistent
        assert unanchored.returncode == 0 and "without external anchors" in unanchored.stderr
        for source in (topic, file):
            bad = await asyncio.to_thread(run_cli, settings, "verify", *source)
            assert bad.returncode == 1, (source, bad.stdout, bad.stderr)
            assert "BROKEN at entry 3" in bad.stderr, bad.stderr
            assert "this entry was rewritten" in bad.stderr
            assert "2 entries before it verified" in bad.stderr
        assert "audit.anchors offset" in bad.stderr or "anchors.jsonl line" in bad.stderr
