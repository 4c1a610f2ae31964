"""`returnflow replacement ship | out-of-stock`: the warehouse's side of an exchange, through the
warehouse HTTP API with a registered device's token (--token, else $RETURNFLOW_DEVICE_TOKEN).

`ship` records the replacement handed to the courier: one --line SKU:QTY per SKU, the outgoing carrier
and tracking number and who packed it. A shipment id is made up when none is given and sent again on a
lost connection, so a retry is answered like the first call, never recorded twice. Exit codes:

    0  recorded (or the same shipment again)
    1  refused (why, and each bad field), no token, the service unreachable
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from typing import Any

import httpx

from apphost.credentials import CliError, problem_text
from apphost.registry import base_url_for
from returnflow.settings import Settings

EXIT_DONE, EXIT_REFUSED = 0, 1
TOKEN_ENV = "RETURNFLOW_DEVICE_TOKEN"
URL_ENV = "RETURNFLOW_WAREHOUSE_URL"
ATTEMPTS = 3


def _lines(specs: list[str]) -> list[dict[str, Any]]:
    out = []
    for spec in specs:
        sku, sep, qty = spec.rpartition(":")
        if not sep or not sku or not qty.isdigit() or int(qty) < 1:
            raise CliError(f"--line wants SKU:QTY with a positive quantity, not {spec!r}")
        out.append({"sku": sku, "qty": int(qty)})
    return out


def _post(base: str, path: str, token: str, body: dict[str, Any]) -> httpx.Response:
    last: Exception | None = None
    for _ in range(ATTEMPTS):
        try:
            with httpx.Client(timeout=10) as client:
                return client.post(f"{base}{path}", json=body, headers={"authorization": f"Bearer {token}"})
        except httpx.TransportError as exc:
            last = exc
    raise CliError(f"cannot reach the warehouse service at {base} ({type(last).__name__})")


def _report(r: httpx.Response, done: str) -> int:
    if r.status_code in (200, 201):
        again = " (the same request again: nothing new recorded)" if r.json().get("duplicate") else ""
        print(done.format(**r.json()) + again)
        return EXIT_DONE
    if r.status_code == 401:
        print(f"refused: the warehouse service does not know this device token ({problem_text(r)})", file=sys.stderr)
        return EXIT_REFUSED
    print(f"refused: {problem_text(r)} (HTTP {r.status_code})", file=sys.stderr)
    return EXIT_REFUSED


def run(args: argparse.Namespace, settings: Settings) -> int | None:
    """Run `replacement ...`; None when `args` is not ours."""
    if args.cmd != "replacement":
        return None
    try:
        rid = str(uuid.UUID(args.return_id))
    except ValueError:
        raise CliError(f"not a return id: {args.return_id!r}") from None
    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        raise CliError(f"no device token: pass --token or set {TOKEN_ENV}")
    base = (args.url or os.environ.get(URL_ENV) or base_url_for(settings, "warehouse")).rstrip("/")
    if args.action == "ship":
        body = {
            "shipment_id": args.shipment_id or f"cli-{uuid.uuid4().hex}",
            "return_id": rid,
            "carrier": args.carrier,
            "tracking_no": args.tracking_no,
            "packed_by": args.packed_by,
            "lines": _lines(args.line),
        }
        r = _post(base, "/v1/warehouse/replacements", token, body)
        return _report(r, "shipped: replacement {shipment_id} of return {return_id}, tracking number {tracking_no}")
    body = {"return_id": rid, "skus": args.sku, "reported_by": args.packed_by, "note": args.note}
    r = _post(base, "/v1/warehouse/replacements/out-of-stock", token, body)
    return _report(r, "reported: no replacement in stock for return {return_id}; it waits for a person")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("replacement", help="an exchange's replacement: ship it, or report it out of stock")
    actions = p.add_subparsers(dest="action", required=True)
    ship = actions.add_parser("ship", help="record the replacement handed to the courier (exit 0 recorded)")
    ship.add_argument("return_id")
    ship.add_argument("--line", action="append", required=True, help="SKU:QTY sent, once per SKU")
    ship.add_argument("--carrier", required=True, help="the outgoing courier's slug (sf, jd, ups, ...)")
    ship.add_argument("--tracking-no", required=True, help="the outgoing parcel's tracking number")
    ship.add_argument("--shipment-id", help="your id for this shipment (default: made up, kept across retries)")
    stock = actions.add_parser("out-of-stock", help="no replacement in stock: the exchange goes to a person")
    stock.add_argument("return_id")
    stock.add_argument("--sku", action="append", required=True, help="a replacement SKU not in stock")
    stock.add_argument("--note")
    for q in (ship, stock):
        q.add_argument("--packed-by", required=True, help="who packed it / who reports it (attributed)")
        q.add_argument("--token", help=f"the warehouse device's token (default: ${TOKEN_ENV})")
        q.add_argument("--url", help=f"warehouse service base URL (default: ${URL_ENV} or the local stack's)")
