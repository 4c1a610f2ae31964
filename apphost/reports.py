"""`returnflow report`: the after-sales lead's reports as a table or CSV, and one picture (PNG)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import httpx

from apphost.credentials import TOKEN_ENV, bearer, problem_text, resolve_token
from apphost.ops import OpsError
from apphost.registry import base_url_for
from returnflow.settings import Settings

REPORTS = ("reasons", "cycle-times", "early-refunds", "authority", "clawbacks", "sms")


async def fetch(settings: Settings, name: str, fmt: str = "json", months: int = 6, token: str | None = None) -> Any:
    url = f"{base_url_for(settings, 'returns')}/v1/analytics/{name}"
    token, _ = resolve_token(token)
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            r = await client.get(url, params={"format": fmt, "months": months}, headers=bearer(token))
    except httpx.HTTPError as exc:
        raise OpsError(f"cannot reach the returns service at {base_url_for(settings, 'returns')} ({exc!r})") from None
    if r.status_code != 200:
        raise OpsError(problem_text(r))
    return r.text if fmt == "csv" else r.json()


def table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no data yet)"
    cols = list(rows[0])
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def chart(cycle: dict[str, Any], reasons: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    by_basis: dict[str, list[float]] = {}
    for d in cycle["durations"]:
        by_basis.setdefault(d["basis"] or "unknown", []).append(d["seconds"] / 3600)
    if by_basis:
        left.hist(list(by_basis.values()), bins=30, stacked=True, label=list(by_basis))
        left.legend()
    left.set_title("Refund cycle time (request → refund paid)")
    left.set_xlabel("hours")
    left.set_ylabel("refunds")
    months = reasons["months"]
    totals: dict[str, int] = {}
    for r in reasons["rows"]:
        totals[r["reason"]] = totals.get(r["reason"], 0) + r["count"]
    for reason in sorted(totals, key=lambda k: -totals[k])[:6]:
        share = {r["month"]: r["share"] * 100 for r in reasons["rows"] if r["reason"] == reason}
        right.plot(months, [share.get(m, 0) for m in months], marker="o", label=reason)
    right.set_title("Return reasons, share of items by month")
    right.set_ylabel("% of returned items")
    if totals:
        right.legend(fontsize="small")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("report", help=f"after-sales reports: {', '.join(REPORTS)}, or chart (PNG)")
    p.add_argument("name", choices=[*REPORTS, "chart"])
    p.add_argument("--csv", action="store_true", help="CSV instead of a table")
    p.add_argument("--months", type=int, default=6)
    p.add_argument("--out", default="returnflow-analytics.png", help="where `report chart` writes its PNG")
    p.add_argument("--token", help=f"your reader token (default: ${TOKEN_ENV}, then `returnflow login`'s file)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.name == "chart":
        cycle = asyncio.run(fetch(settings, "cycle-times", token=args.token))
        reasons = asyncio.run(fetch(settings, "reasons", months=args.months, token=args.token))
        print(f"wrote {chart(cycle, reasons, Path(args.out))}")
    elif args.csv:
        print(asyncio.run(fetch(settings, args.name, "csv", args.months, args.token)), end="")
    else:
        body = asyncio.run(fetch(settings, args.name, months=args.months, token=args.token))
        print(table(body["rows"]))
        if body.get("top_movers"):
            print("\ntop movers (share of items, previous month → latest):")
            print(table(body["top_movers"]))
    return 0
