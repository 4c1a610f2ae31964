"""`returnflow audit ...`: post a returns-team check, resolve a discrepancy, verify the log's chain.

`check` and `resolve` talk to the audit service's HTTP API (the token says who you are);
`verify` reads the log straight from PostgreSQL, so it works with the service stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from apphost.registry import base_url_for

MOVEMENTS = ("restock", "destroy", "refurbish", "relist", "delist")


def register(sub: Any) -> None:
    audit = sub.add_parser("audit", help="dual-check inventory log: checks, resolutions, chain verification")
    asub = audit.add_subparsers(dest="audit_cmd", required=True)

    check = asub.add_parser("check", help="record a returns-team check of a stock movement")
    check.add_argument("--return-id", required=True)
    check.add_argument("--sku", required=True)
    check.add_argument("--movement", required=True, choices=MOVEMENTS)
    check.add_argument("--quantity", required=True, type=int)
    check.add_argument("--check-id", help="idempotency key (repeat it to retry safely)")
    check.add_argument("--checked-at", help="ISO 8601 time of the check (default now)")
    check.add_argument("--note")
    _http_args(check)

    resolve = asub.add_parser("resolve", help="resolve a discrepancy with a note")
    resolve.add_argument("discrepancy_id")
    resolve.add_argument("--note", required=True)
    _http_args(resolve)

    verify = asub.add_parser(
        "verify", help="recompute the audit log's hash chain; exit 1 naming the first entry that does not match"
    )
    verify.add_argument("--database-url", help="default: RETURNFLOW_DATABASE_URL, else the embedded database")
    verify.add_argument(
        "--anchor",
        action="append",
        default=[],
        metavar="SEQ:HASH",
        help="a (seq, hash) recorded elsewhere, e.g. audit_seq/audit_hash of an inventory.* event (repeatable)",
    )
    verify.add_argument("--json", action="store_true", help="print the result as JSON")


def _http_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="audit service base URL (default from settings)")
    p.add_argument("--token", help="your returns-team bearer token (default: RETURNFLOW_AUDIT_TOKEN)")


def run(args: argparse.Namespace) -> int:
    if args.audit_cmd == "verify":
        return asyncio.run(_verify(args))
    return _http(args)


def _http(args: argparse.Namespace) -> int:
    import httpx
    import orjson

    from returnflow.settings import get_settings

    token = args.token or os.environ.get("RETURNFLOW_AUDIT_TOKEN")
    if not token:
        print("returnflow: a token is required (--token or RETURNFLOW_AUDIT_TOKEN)", file=sys.stderr)
        return 2
    base = (args.url or base_url_for(get_settings(), "audit")).rstrip("/")
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    if args.audit_cmd == "check":
        body: dict[str, Any] = {
            "return_id": args.return_id,
            "sku": args.sku,
            "movement": args.movement,
            "quantity": args.quantity,
        }
        for k in ("check_id", "checked_at", "note"):
            if getattr(args, k):
                body[k] = getattr(args, k)
        url = f"{base}/v1/inventory/checks"
    else:
        body = {"note": args.note}
        url = f"{base}/v1/audit/discrepancies/{args.discrepancy_id}/resolution"
    try:
        r = httpx.post(url, content=orjson.dumps(body), headers=headers, timeout=15)
    except httpx.HTTPError as exc:
        print(f"returnflow: cannot reach the audit service at {base}: {exc}", file=sys.stderr)
        return 1
    out = sys.stdout if r.is_success else sys.stderr
    print(orjson.dumps(r.json(), option=orjson.OPT_INDENT_2).decode(), file=out)
    return 0 if r.is_success else 1


async def _verify(args: argparse.Namespace) -> int:
    import orjson

    from returnflow import db
    from returnflow.settings import get_settings
    from services.audit import views
    from services.audit.chain import parse_anchors

    try:
        anchors = parse_anchors(args.anchor)
    except ValueError as exc:
        print(f"returnflow: --anchor {exc}", file=sys.stderr)
        return 2
    settings = get_settings()
    dsn = args.database_url or (settings.database_url.get_secret_value() if settings.database_url else None)
    embedded = None
    if dsn is None:
        from apphost.embedded import EmbeddedPostgres

        pgdata = settings.data_dir / "postgres"
        if not pgdata.exists():
            print(
                "returnflow: no database: set RETURNFLOW_DATABASE_URL or --database-url "
                f"(no embedded database under {pgdata})",
                file=sys.stderr,
            )
            return 2
        embedded = EmbeddedPostgres(pgdata)
        await asyncio.to_thread(embedded.start)
        dsn = embedded.uri("returnflow")
    try:
        conn = await db.connect(dsn, "audit")
        try:
            exists = await conn.fetchval("SELECT to_regclass('audit.audit_log') IS NOT NULL")
            if not exists:
                print(
                    "returnflow: the audit log does not exist in this database (audit never started)", file=sys.stderr
                )
                return 2
            result = await views.verify_log(conn, anchors)
        finally:
            await conn.close()
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
    if args.json:
        print(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2).decode())
    elif result.ok:
        print(f"audit log intact: {result.checked} entries, head {result.head_seq} {result.head_hash}")
    else:
        print(
            f"audit log BROKEN at entry {result.first_bad}: {result.problem}\n"
            f"  {result.checked} entries before it verified (last good: {result.head_seq} {result.head_hash})",
            file=sys.stderr,
        )
    return 0 if result.ok else 1
