"""`returnflow audit ...`: post a returns-team check, resolve a discrepancy, verify the log's chain.

`check` and `resolve` talk to the audit service's HTTP API (the token says who you are);
`verify` reads the log straight from PostgreSQL, so it works with the service stopped, and checks it
against the anchors the service published outside PostgreSQL (`--anchors-topic`: audit.anchors read
to its end; `--anchors-file`: the JSON-lines file, wherever it was shipped) and any `--anchor`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from apphost.registry import base_url_for
from contracts.events import Movement

MOVEMENTS = tuple(m.value for m in Movement)  # replacement_out: an exchange's replacement leaving stock


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
    verify.add_argument(
        "--anchors-topic",
        action="store_true",
        help="check against every anchor on the audit.anchors topic (read to its end)",
    )
    verify.add_argument("--bootstrap", help="Kafka bootstrap for --anchors-topic (default from settings)")
    verify.add_argument(
        "--anchors-file",
        action="append",
        default=[],
        metavar="PATH",
        help="check against the anchors in this JSON-lines file (the service's anchor_file, as shipped; repeatable)",
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


class AnchorsUnreadable(Exception):
    pass


def _published(value: bytes | str, origin: str) -> Any:
    from pydantic import ValidationError

    from contracts.events import AuditAnchored
    from services.audit.chain import Published

    try:
        a = AuditAnchored.model_validate_json(value)
    except ValidationError as exc:
        raise AnchorsUnreadable(f"{origin} is not an audit.anchored event: {exc.errors()[0]['msg']}") from None
    return Published(a.seq, a.hash, a.hashes, a.occurred_at.isoformat(), origin)


def anchors_in_file(path: str) -> list[Any]:
    from pathlib import Path

    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise AnchorsUnreadable(f"cannot read {path}: {exc.strerror}") from None
    return [_published(line, f"{path} line {n}") for n, line in enumerate(lines, 1) if line.strip()]


async def anchors_on_topic(bootstrap: str) -> list[Any]:
    """Every anchor on audit.anchors, in publication order, read to the end: until a fetch returns nothing
    and every position has reached the reported end (the embedded broker reports the base offset of the
    last record batch + 1, a lower bound, so the end offsets alone would miss the last anchors)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from contracts.catalog import topic_of
    from contracts.events import AuditAnchored

    topic = topic_of(AuditAnchored)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False
    )
    try:
        await asyncio.wait_for(consumer.start(), 10)
    except Exception as exc:
        raise AnchorsUnreadable(f"cannot reach Kafka at {bootstrap} ({type(exc).__name__})") from None
    out: list[Any] = []
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not parts:
            raise AnchorsUnreadable(f"no topic {topic!r} at {bootstrap}")
        ends = await consumer.end_offsets(parts)
        while True:
            batch = await consumer.getmany(timeout_ms=1000)
            for recs in batch.values():
                out += [_published(r.value, f"{topic} offset {r.offset}") for r in recs]
            if not batch and all([await consumer.position(tp) >= ends.get(tp, 0) for tp in parts]):
                return out
    finally:
        await consumer.stop()


async def _anchors(args: argparse.Namespace) -> Any:
    from returnflow.settings import get_settings
    from services.audit.chain import Anchors, parse_anchors

    anchors = Anchors()
    try:
        for seq, h in parse_anchors(args.anchor).items():
            anchors.add(seq, h, f"--anchor {seq}:{h[:12]}…")
    except ValueError as exc:
        raise AnchorsUnreadable(f"--anchor {exc}") from None
    if args.anchors_topic:
        from apphost.ops import bootstrap_of

        anchors.add_published(await anchors_on_topic(args.bootstrap or bootstrap_of(get_settings())))
    for path in args.anchors_file:
        anchors.add_published(anchors_in_file(path))
    return anchors


async def _verify(args: argparse.Namespace) -> int:
    import orjson

    from returnflow import db
    from returnflow.settings import get_settings
    from services.audit import views

    try:
        anchors = await _anchors(args)
    except AnchorsUnreadable as exc:
        print(f"returnflow: {exc}", file=sys.stderr)
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
            result = await views.verify_log(conn, anchors.hashes, origins=anchors.origins)
        finally:
            await conn.close()
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
    external = args.anchors_topic or args.anchors_file
    if args.json:
        doc = {**result.as_dict(), "anchors": {"entries": len(anchors.hashes), "published": anchors.published}}
        print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    elif result.ok:
        print(f"audit log intact: {result.checked} entries, head {result.head_seq} {result.head_hash}")
        if external:
            print(
                f"  matches {len(anchors.hashes)} anchored entries from {anchors.published} published anchors "
                f"(latest: entry {anchors.head_seq} at {anchors.head_at})"
            )
            if anchors.head_seq < result.head_seq:
                print(f"  entries {anchors.head_seq + 1}..{result.head_seq} are not anchored yet")
        elif not anchors.hashes:
            print(
                "  checked without external anchors: a rewrite that recomputed the hashes would pass "
                "(add --anchors-topic or --anchors-file)",
                file=sys.stderr,
            )
    else:
        print(
            f"audit log BROKEN at entry {result.first_bad}: {result.problem}\n"
            f"  {result.checked} entries before it verified (last good: {result.head_seq} {result.head_hash})",
            file=sys.stderr,
        )
    return 0 if result.ok else 1
