"""`make run` demo step: where the SMS go (the file provider's JSON lines) and what the demo's
customers received, or why a message waits (their night) or was not sent."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson

from apphost.registry import base_url_for
from returnflow.settings import Settings
from services.notify.providers import sms_file
from services.notify.render import Templates
from services.notify.settings import NotifySettings

FINAL = ("sent", "failed", "suppressed")


async def _messages(client: httpx.AsyncClient, base: str, rid: str) -> list[dict[str, Any]]:
    r = await client.get(f"{base}/v1/returns/{rid}/sms")
    return list(r.json().get("messages", [])) if r.status_code == 200 else []


def _settled(msgs: list[dict[str, Any]]) -> bool:
    first = [m for m in msgs if m["step"] == "requested"]
    return bool(first) and (first[0]["status"] in FINAL or bool(first[0]["reason"]))


def _preview(templates: Templates, notify: NotifySettings, r: dict[str, Any], m: dict[str, Any]) -> str:
    """What a message that is still waiting will say (the sender renders it when it goes)."""
    step = m["step"]
    values = {
        **(m.get("params") or {}),  # e.g. the refund's amount and currency
        "step": step,
        "shop_id": r["shop_id"],
        "shop_name": notify.shop_names.get(r["shop_id"]) or r["shop_id"],
        "kind": r["kind"],
        "order_id": r["order_id"],
        "return_ref": r["platform_return_id"],
        "items": sum(int(line["qty"]) for line in r["lines"]),
        "tracking_no": r.get("tracking_no"),
    }
    locale = templates.locale_for(r["customer"]["locale"])
    return f"[{locale}] " + templates.render(step, locale, values).replace("\n", " / ")


async def play(client: httpx.AsyncClient, settings: Settings, returns: list[dict[str, Any]]) -> None:
    base = base_url_for(settings, "notify")
    notify = NotifySettings.load()  # what the notify service reads from the same environment
    templates = Templates(notify.templates_dir, notify.default_locale)
    path = sms_file(notify, settings).resolve()
    if notify.provider == "file":
        print(f"  SMS provider: file — every message is a JSON line in {path}")
    else:
        print(f"  SMS provider: {notify.provider}")
    deadline = time.monotonic() + 15
    found: dict[str, list[dict[str, Any]]] = {}
    while time.monotonic() < deadline:
        found = {r["return_id"]: await _messages(client, base, r["return_id"]) for r in returns}
        if all(_settled(m) for m in found.values()):
            break
        await asyncio.sleep(0.3)
    lines: dict[str, list[dict[str, Any]]] = {}
    if path.exists():
        for raw in path.read_bytes().splitlines():
            with_id = orjson.loads(raw) if raw.strip() else {}
            lines.setdefault(str(with_id.get("return_id")), []).append(with_id)
    for r in returns:
        rid, cust = r["return_id"], r["customer"]
        print(f"  return {rid[:8]}… {r['kind']}, customer {cust['locale']} in {cust['timezone']}:")
        for m in found.get(rid, []):
            if m["status"] == "sent":
                continue
            if m["kind"] == "reminder" and m["status"] == "queued" and not m["reason"]:
                print(f"    {m['step']:<12} scheduled for {str(m['due_at'])[:16]} UTC (no moving scan by then)")
            elif m["status"] == "queued":
                why = "quiet hours: the customer's night" if m["reason"] == "quiet_hours" else m["reason"]
                print(f"    {m['step']:<12} waits until {str(m['due_at'])[:16]} UTC ({why})")
                print(f"    {'':<12} will read {_preview(templates, notify, r, m)}")
            else:
                print(f"    {m['step']:<12} {m['status']}: {m['reason'] or m['last_error']}")
        for line in lines.get(rid, []):
            text = line["text"].replace("\n", " / ")
            print(f"    SMS to {line['to']} [{line['locale']}] {line['step']}: {text}")
    print(f"  read them all: tail -f {path}")
