"""`returnflow queue` and `returnflow clawback resolve`: the work that needs a person, and closing a
clawback, with the person's own credential (see apphost/credentials.py), through the services' HTTP APIs.

`queue` reads refunds (escalations, declined refunds, clawbacks) and audit (open discrepancies), puts
them in one list, oldest first, with counts per kind. A kind the credential may not read (an agent's
token on the audit service, say) is named as not visible rather than failing the whole queue.

    exit 0  listed (some kinds may be not visible with this credential)
    exit 1  no credential, a token no service knows, or no service reachable

`clawback resolve` exits 0 resolved (or already resolved the same way), 1 refused (and why).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from apphost.credentials import TOKEN_ENV, CliError, problem_text, resolve_token
from apphost.decisions_cli import EXIT_DONE, EXIT_REFUSED, URL_ENV, refunds_url
from apphost.registry import base_url_for
from returnflow.settings import Settings

AUDIT_URL_ENV = "RETURNFLOW_AUDIT_URL"
KINDS = ("escalation", "failure", "clawback", "discrepancy")
PLURAL = {
    "escalation": "escalations",
    "failure": "declined refunds",
    "clawback": "clawbacks",
    "discrepancy": "discrepancies",
}


@dataclass(frozen=True)
class Item:
    """One piece of work, whatever service holds it."""

    kind: str
    item_id: str
    return_id: str
    since: datetime
    amount: int | None
    currency: str | None
    what: str


@dataclass
class Source:
    kind: str
    items: list[Item]
    total: int | None  # None: not visible with this credential (or the service not reachable)
    why: str = ""


def _get(url: str, token: str, params: dict[str, Any]) -> httpx.Response | None:
    try:
        with httpx.Client(timeout=10) as client:
            return client.get(url, params=params, headers={"authorization": f"Bearer {token}"})
    except httpx.TransportError:
        return None


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _refunds_items(kind: str, body: dict[str, Any]) -> tuple[list[Item], int]:
    if kind == "escalation":
        items = [
            Item(
                kind,
                e["escalation_id"],
                e["return_id"],
                _when(e["raised_at"]),
                e["amount"],
                e["currency"],
                f"needs a {e['required_role']}"
                + (f", asked by {e['raised_by']}" if e.get("raised_by") else "")
                + f": {e['reason']}",
            )
            for e in body["escalations"]
        ]
        return items, body["counts"]["total"]
    if kind == "failure":
        items = [
            Item(
                kind,
                f["refund_id"],
                f["return_id"],
                _when(f["failed_at"]),
                f["amount"],
                f["currency"],
                f"declined by the gateway: {f.get('error') or 'no reason given'}",
            )
            for f in body["failures"]
        ]
        return items, body["counts"]["total"]
    items = [
        Item(kind, c["clawback_id"], c["return_id"], _when(c["flagged_at"]), c["amount"], c["currency"], c["reason"])
        for c in body["clawbacks"]
    ]
    return items, body["counts"]["open"]


REFUNDS_PATHS = {
    "escalation": "/v1/refunds/escalations",
    "failure": "/v1/refunds/failures",
    "clawback": "/v1/refunds/clawbacks",
}


def refunds_source(base: str, token: str, kind: str, shop: str | None, limit: int) -> Source:
    params: dict[str, Any] = {"limit": limit}
    if shop:
        params["shop"] = shop
    r = _get(base + REFUNDS_PATHS[kind], token, params)
    if r is None:
        return Source(kind, [], None, f"refunds service not reachable at {base}")
    if r.status_code != 200:
        return Source(kind, [], None, f"not visible with this credential ({problem_text(r)})")
    items, total = _refunds_items(kind, r.json())
    return Source(kind, items, total)


def audit_source(base: str, token: str, limit: int) -> Source:
    """Open discrepancies (the audit list is newest first with no count: the oldest `limit` are asked for
    by reading up to 1,000 and the total is what came back, shown as `1000+` when there may be more)."""
    r = _get(f"{base}/v1/audit/discrepancies", token, {"status": "open", "limit": 1000})
    if r is None:
        return Source("discrepancy", [], None, f"audit service not reachable at {base}")
    if r.status_code != 200:
        return Source("discrepancy", [], None, f"not visible with this credential ({problem_text(r)})")
    rows = r.json()["discrepancies"]
    items = sorted(
        (
            Item(
                "discrepancy",
                d["id"],
                d["return_id"],
                _when(d["opened_at"]),
                None,
                None,
                f"{d['reason']} on {d['sku']}: {d['details']}",
            )
            for d in rows
        ),
        key=lambda i: (i.since, i.item_id),
    )
    return Source("discrepancy", items[:limit], len(rows))


def age_text(since: datetime, now: datetime) -> str:
    s = max(0, int((now - since).total_seconds()))
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def queue_cmd(
    settings: Settings,
    kinds: list[str] | None,
    shop: str | None,
    limit: int,
    as_json: bool,
    token_flag: str | None,
    url: str | None,
    audit_url: str | None,
) -> int:
    token, _ = resolve_token(token_flag)
    wanted = kinds or list(KINDS)
    base = refunds_url(settings, url)
    audit = (audit_url or os.environ.get(AUDIT_URL_ENV) or base_url_for(settings, "audit")).rstrip("/")
    sources = [
        audit_source(audit, token, limit) if k == "discrepancy" else refunds_source(base, token, k, shop, limit)
        for k in wanted
    ]
    if all(s.total is None for s in sources):
        reasons = "; ".join(sorted({s.why for s in sources}))
        raise CliError(f"no work is visible with this credential: {reasons}")
    items = sorted((i for s in sources for i in s.items), key=lambda i: (i.since, i.kind, i.item_id))[:limit]
    if as_json:
        print(
            json.dumps(
                {
                    "counts": {s.kind: s.total for s in sources},
                    "not_visible": {s.kind: s.why for s in sources if s.total is None},
                    "items": [{**i.__dict__, "since": i.since.isoformat()} for i in items],
                },
                indent=2,
            )
        )
        return EXIT_DONE
    counts = ", ".join(f"{s.total} {PLURAL[s.kind]}" for s in sources if s.total is not None)
    print(f"work waiting for a person, oldest first: {counts}")
    for s in sources:
        if s.total is None:
            print(f"  {PLURAL[s.kind]}: {s.why}")
    now = datetime.now(UTC)
    if items:
        print(f"{'KIND':<12} {'WAITING':>8}  {'RETURN':<36}  {'AMOUNT':>14}  {'ID':<36}  WHAT")
    for i in items:
        money = f"{i.amount} {i.currency}" if i.amount is not None else "-"
        what = i.what if len(i.what) <= 90 else i.what[:87] + "..."
        print(f"{i.kind:<12} {age_text(i.since, now):>8}  {i.return_id:<36}  {money:>14}  {i.item_id:<36}  {what}")
    shown = len(items)
    total = sum(s.total or 0 for s in sources)
    if shown < total:
        print(f"({shown} of {total} shown: --limit, --kind or --shop to see others)")
    return EXIT_DONE


def clawback_resolve_cmd(
    settings: Settings, clawback_id: str, resolution: str, note: str | None, token_flag: str | None, url: str | None
) -> int:
    token, _ = resolve_token(token_flag)
    base = refunds_url(settings, url)
    body: dict[str, Any] = {"resolution": resolution}
    if note:
        body["note"] = note
    try:
        with httpx.Client(timeout=10) as client:
            r = client.post(
                f"{base}/v1/refunds/clawbacks/{clawback_id}/resolution",
                json=body,
                headers={"authorization": f"Bearer {token}"},
            )
    except httpx.TransportError as exc:
        raise CliError(f"cannot reach the refunds service at {base} ({type(exc).__name__})") from None
    if r.status_code == 200:
        b = r.json()
        done = "resolved" if b["result"] == "resolved" else "already resolved"
        print(
            f"done: clawback {clawback_id} {done} ({b['resolution']}, {b['amount']} {b['currency']} minor units) "
            f"by {b['resolved_by']} ({b['resolved_role']})"
        )
        return EXIT_DONE
    if r.status_code == 401:
        print(f"refused: the refunds service does not know this token ({problem_text(r)})", file=sys.stderr)
    else:
        print(f"refused: {problem_text(r)} (HTTP {r.status_code}, clawback {clawback_id})", file=sys.stderr)
    return EXIT_REFUSED


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token_help = f"your token (default: ${TOKEN_ENV}, then `returnflow login`'s file)"
    q = sub.add_parser(
        "queue",
        help="the work that needs a person (escalations, declined refunds, clawbacks, discrepancies), oldest first",
    )
    q.add_argument("--kind", action="append", choices=KINDS, help="only this kind (repeatable)")
    q.add_argument("--shop", help="only this shop (refunds' work)")
    q.add_argument("--limit", type=int, default=50, help="items shown (default 50; counts are always complete)")
    q.add_argument("--json", action="store_true", help="JSON instead of a table")
    q.add_argument("--token", help=token_help)
    q.add_argument("--url", help=f"refunds service base URL (default: ${URL_ENV}, the login's, the local stack's)")
    q.add_argument("--audit-url", help=f"audit service base URL (default: ${AUDIT_URL_ENV} or the local stack's)")
    c = sub.add_parser("clawback", help="close a clawback (supervisor or above), through the refunds API")
    csub = c.add_subparsers(dest="clawback_cmd", required=True)
    r = csub.add_parser("resolve", help="resolve a clawback: exit 0 done, 1 refused")
    r.add_argument("clawback_id")
    r.add_argument("--resolution", required=True, choices=["waived", "recovered_off_platform", "written_off"])
    r.add_argument("--note")
    r.add_argument("--token", help=token_help)
    r.add_argument("--url", help=f"refunds service base URL (default: ${URL_ENV}, the login's, the local stack's)")


def run(args: argparse.Namespace, settings: Settings) -> int | None:
    """Run one of these commands; None when `args` is not one of ours."""
    if args.cmd == "queue":
        if args.limit < 1:
            raise CliError("--limit must be at least 1")
        return queue_cmd(
            settings, args.kind, args.shop, min(args.limit, 1000), args.json, args.token, args.url, args.audit_url
        )
    if args.cmd == "clawback":
        return clawback_resolve_cmd(settings, args.clawback_id, args.resolution, args.note, args.token, args.url)
    return None
