"""The workbench's queue page with 10,000 open items: GET /queue (a signed-in supervisor's session) at a
steady rate against `returnflow up`, next to the same process's static page (GET /signin: a template, no
database, no upstream call) at the same rate. Reports p50/p95/p99 of both and the ratio.

  .venv/bin/python -m bench.workbench_queue [--items 10000] [--rate 20] [--seconds 15] [--cache-s 0.5]

The open items are escalations written straight into the refunds schema (one return each, spread over
the last 30 days), so the bench measures the page, not how fast 10,000 returns can be filed. Open loop
(bench.page.steady). Writes bench/results/workbench_queue.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from apphost.embedded import EmbeddedPostgres
from bench.page import RESULTS, steady
from tests.e2e.test_up import base, start, stop, wait_ready
from tests.e2e.workbench_support import seed_roster, workbench_env

SEED = """
WITH n AS (SELECT g, gen_random_uuid() AS rid FROM generate_series(1, $1) g),
r AS (
    INSERT INTO refunds.returns (return_id, shop_id, order_id, kind, currency, paid_total, customer_key,
                                 requested_at, lines, correlation_id)
    SELECT rid, 'shop-' || (g % 7), 'bench-' || g, 'refund_only', 'CNY', 10000, 'c-' || g,
           now() - make_interval(secs => g * 259.2), '[]'::jsonb, 'bench'
    FROM n RETURNING return_id, requested_at
)
INSERT INTO refunds.escalations (escalation_id, return_id, cause, amount, currency, basis, required_role,
                                 requested_by, reason, created_at)
SELECT 'bench-' || return_id, return_id, 'bench', 2500 + (extract(epoch FROM requested_at)::bigint % 7000),
       'CNY', 'refund_only',
       (ARRAY['supervisor', 'manager', 'owner'])[1 + (extract(epoch FROM requested_at)::bigint % 3)],
       'agent-amy', 'bench: a person decides', requested_at
FROM r
"""


async def seed(data_dir: Path, items: int) -> int:
    pg = EmbeddedPostgres(data_dir / "postgres")
    pg.start()  # attaches to the stack's server
    conn = await asyncpg.connect(pg.uri("returnflow"))
    try:
        await conn.execute(SEED, items)
        found: int = await conn.fetchval("SELECT count(*) FROM refunds.escalations WHERE status = 'open'")
        await conn.execute("ANALYZE refunds.escalations; ANALYZE refunds.returns")
        return found
    finally:
        await conn.close()


async def session_cookie(env: dict[str, str]) -> str:
    async with httpx.AsyncClient(base_url=base(env, "workbench"), timeout=10) as c:
        page = await c.get("/signin")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        r = await c.post("/signin", data={"csrf": csrf.group(1), "person_id": "sup-sam", "token": "dev-token-sup-sam"})
        assert r.status_code == 303, r.text
        return str(c.cookies["wb_session"])


async def run(items: int, rate: float, seconds: float, cache_s: float) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="returnflow-bench-wb-"))
    env = workbench_env(root / "data")
    env["RETURNFLOW_WORKBENCH_QUEUE_CACHE_S"] = str(cache_s)
    proc = start(env)
    try:
        wait_ready(proc)
        seed_roster(env)
        open_items = await seed(root / "data", items)
        cookie = f"Cookie: wb_session={await session_cookie(env)}\r\n"
        port = int(env["RETURNFLOW_WORKBENCH_PORT"])
        async with httpx.AsyncClient(base_url=base(env, "workbench"), timeout=10) as c:
            page = await c.get("/queue", headers={"cookie": cookie[8:].strip()})
            assert page.status_code == 200 and f"({open_items})" in page.text, page.text[:500]
        out: dict[str, Any] = {}
        for name, paths in (
            ("static", ["/signin"]),
            ("queue", ["/queue", "/queue?kind=escalation", "/queue?role=manager", "/queue?min_age_h=240"]),
        ):
            out[name] = await steady(port, paths, rate, seconds, conns=8, headers=cookie)
        out["ratio_p99"] = round(out["queue"]["p99_ms"] / out["static"]["p99_ms"], 2)
        out["ratio_p50"] = round(out["queue"]["p50_ms"] / out["static"]["p50_ms"], 2)
        out["setup"] = {"open_items": open_items, "rate_per_s": rate, "seconds": seconds, "queue_cache_s": cache_s}
        return out
    finally:
        stop(proc)
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--cache-s", type=float, default=0.5, help="RETURNFLOW_WORKBENCH_QUEUE_CACHE_S (0: none)")
    ap.add_argument("--out", default=str(RESULTS / "workbench_queue.json"))
    args = ap.parse_args()
    result = asyncio.run(run(args.items, args.rate, args.seconds, args.cache_s))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
