"""Reports for the after-sales lead (the read side of GET /v1/analytics/{report}), computed from the
returns and the lifecycle events on their timelines (the returns service reads every lifecycle
topic). Each report returns flat `rows` (for a table or CSV) plus what a chart needs."""

from __future__ import annotations

from typing import Any, Literal, get_args

import asyncpg

ReportName = Literal["reasons", "cycle-times", "early-refunds", "authority", "clawbacks", "sms"]
REPORTS: tuple[str, ...] = get_args(ReportName)


async def reasons(pool: asyncpg.Pool, months: int = 6) -> dict[str, Any]:
    rows = await pool.fetch(
        """SELECT to_char(date_trunc('month', r.requested_at), 'YYYY-MM') AS month, l.reason, count(*) AS n
           FROM return_lines l JOIN returns r ON r.id = l.return_id
           WHERE r.requested_at >= date_trunc('month', now()) - make_interval(months => $1 - 1)
           GROUP BY 1, 2 ORDER BY 1, 3 DESC""",
        months,
    )
    counts: dict[str, dict[str, int]] = {}
    for r in rows:
        counts.setdefault(r["month"], {})[r["reason"]] = int(r["n"])
    month_list = sorted(counts)
    out = []
    for month in month_list:
        total = sum(counts[month].values())
        for reason, n in sorted(counts[month].items(), key=lambda kv: -kv[1]):
            out.append({"month": month, "reason": reason, "count": n, "share": round(n / total, 4)})
    return {"report": "reasons", "months": month_list, "rows": out, "top_movers": top_movers(counts, month_list)}


def top_movers(counts: dict[str, dict[str, int]], months: list[str], n: int = 3) -> list[dict[str, Any]]:
    """Reasons whose share of returns changed most from the previous month to the latest one."""
    if len(months) < 2:
        return []
    prev, last = months[-2], months[-1]
    total_prev = sum(counts.get(prev, {}).values()) or 1
    total_last = sum(counts.get(last, {}).values()) or 1
    reasons = set(counts.get(prev, {})) | set(counts.get(last, {}))
    moves: list[dict[str, Any]] = []
    for r in sorted(reasons):
        before = counts.get(prev, {}).get(r, 0) / total_prev
        now = counts.get(last, {}).get(r, 0) / total_last
        moves.append(
            {
                "reason": r,
                "share_before": round(before, 4),
                "share_now": round(now, 4),
                "change": round(now - before, 4),
            }
        )
    moves.sort(key=lambda m: -abs(m["change"]))
    return moves[:n]


async def cycle_times(pool: asyncpg.Pool) -> dict[str, Any]:
    rows = await pool.fetch(
        """WITH paid AS (
               SELECT t.data->>'basis' AS basis, EXTRACT(EPOCH FROM t.occurred_at - r.requested_at) AS s
               FROM timeline t JOIN returns r ON r.id = t.return_id WHERE t.type = 'refund.issued')
           SELECT basis, count(*) AS n,
                  percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY s) AS p
           FROM paid GROUP BY basis ORDER BY basis"""
    )
    durations = await pool.fetch(
        """SELECT t.data->>'basis' AS basis, EXTRACT(EPOCH FROM t.occurred_at - r.requested_at)::float8 AS s
           FROM timeline t JOIN returns r ON r.id = t.return_id WHERE t.type = 'refund.issued'
           ORDER BY t.occurred_at DESC LIMIT 20000"""
    )
    return {
        "report": "cycle-times",
        "rows": [
            {
                "basis": r["basis"],
                "refunds": int(r["n"]),
                "p50_s": round(float(r["p"][0]), 3),
                "p90_s": round(float(r["p"][1]), 3),
                "p99_s": round(float(r["p"][2]), 3),
            }
            for r in rows
        ],
        "durations": [{"basis": d["basis"], "seconds": max(0.0, d["s"])} for d in durations],
    }


async def early_refunds(pool: asyncpg.Pool) -> dict[str, Any]:
    r = await pool.fetchrow(
        """SELECT count(*) FILTER (WHERE data->>'basis' = 'early_scan') AS early,
                  count(*) FILTER (WHERE data->>'basis' = 'warehouse_receipt') AS at_receipt,
                  count(*) AS total FROM timeline WHERE type = 'refund.issued'"""
    )
    assert r is not None
    total = int(r["total"])
    return {
        "report": "early-refunds",
        "rows": [
            {
                "refunds": total,
                "early_scan": int(r["early"]),
                "warehouse_receipt": int(r["at_receipt"]),
                "early_share": round(int(r["early"]) / total, 4) if total else 0.0,
            }
        ],
    }


async def authority(pool: asyncpg.Pool) -> dict[str, Any]:
    decided = await pool.fetch(
        """SELECT data->>'actor_id' AS actor, data->>'actor_role' AS role, count(*) AS n,
                  COALESCE(sum((data->>'amount')::bigint), 0) AS amount
           FROM timeline WHERE type = 'refund.decided' AND data->>'actor_id' IS NOT NULL
           GROUP BY 1, 2 ORDER BY 1"""
    )
    escalated = await pool.fetch(
        """SELECT data->>'requested_by' AS actor, data->>'required_role' AS role, count(*) AS n,
                  COALESCE(sum((data->>'amount')::bigint), 0) AS amount
           FROM timeline WHERE type = 'refund.escalated' GROUP BY 1, 2 ORDER BY 1"""
    )
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in decided:
        rows[(r["actor"], r["role"] or "")] = {
            "actor": r["actor"],
            "role": r["role"],
            "decisions": int(r["n"]),
            "amount": int(r["amount"]),
            "escalations": 0,
        }
    for r in escalated:
        key = (r["actor"] or "policy", "")
        row = rows.setdefault(
            key, {"actor": r["actor"] or "policy", "role": None, "decisions": 0, "amount": 0, "escalations": 0}
        )
        row["escalations"] += int(r["n"])
    return {
        "report": "authority",
        "rows": list(rows.values()),
        "escalations_by_role": [
            {"required_role": r["role"], "count": int(r["n"]), "amount": int(r["amount"])} for r in escalated
        ],
    }


async def clawbacks(pool: asyncpg.Pool) -> dict[str, Any]:
    r = await pool.fetchrow(
        """SELECT count(*) FILTER (WHERE type = 'refund.clawback_flagged') AS flagged,
                  COALESCE(sum((data->>'amount')::bigint) FILTER (WHERE type = 'refund.clawback_flagged'), 0) AS amount,
                  count(*) FILTER (WHERE type = 'refund.issued' AND data->>'basis' = 'early_scan') AS early
           FROM timeline WHERE type IN ('refund.clawback_flagged', 'refund.issued')"""
    )
    assert r is not None
    early = int(r["early"])
    return {
        "report": "clawbacks",
        "rows": [
            {
                "early_refunds": early,
                "clawbacks_flagged": int(r["flagged"]),
                "clawback_amount": int(r["amount"]),
                "clawback_rate": round(int(r["flagged"]) / early, 4) if early else 0.0,
            }
        ],
    }


async def sms(pool: asyncpg.Pool) -> dict[str, Any]:
    r = await pool.fetchrow(
        """SELECT count(*) FILTER (WHERE type = 'sms.sent') AS sent,
                  count(*) FILTER (WHERE type = 'sms.failed') AS failed,
                  count(*) FILTER (WHERE type = 'sms.deferred') AS deferred,
                  count(*) FILTER (WHERE type = 'sms.suppressed') AS suppressed,
                  count(*) FILTER (WHERE type = 'sms.suppressed' AND data->>'reason' ILIKE '%opt%') AS opted_out
           FROM timeline WHERE type LIKE 'sms.%'"""
    )
    assert r is not None
    sent, failed = int(r["sent"]), int(r["failed"])
    attempted = sent + failed + int(r["suppressed"])
    return {
        "report": "sms",
        "rows": [
            {
                "sent": sent,
                "failed": failed,
                "deferred": int(r["deferred"]),
                "suppressed": int(r["suppressed"]),
                "opted_out": int(r["opted_out"]),
                "delivery_rate": round(sent / (sent + failed), 4) if sent + failed else 0.0,
                "opt_out_rate": round(int(r["opted_out"]) / attempted, 4) if attempted else 0.0,
            }
        ],
    }


async def report(pool: asyncpg.Pool, name: str, months: int = 6) -> dict[str, Any]:
    match name:
        case "reasons":
            return await reasons(pool, months)
        case "cycle-times":
            return await cycle_times(pool)
        case "early-refunds":
            return await early_refunds(pool)
        case "authority":
            return await authority(pool)
        case "clawbacks":
            return await clawbacks(pool)
        case "sms":
            return await sms(pool)
    raise KeyError(name)


def to_csv(rows: list[dict[str, Any]]) -> str:
    import csv
    import io

    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()
