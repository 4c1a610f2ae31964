"""`make run`'s workbench step: an agent signs in through the workbench's sign-in page (CSRF token and
all, as a browser would), grants a small free refund on the demo's first return from its page, and the
outcome the page shows is printed; then where each kind of person signs in."""

from __future__ import annotations

import re
from typing import Any

import httpx

from apphost.registry import base_url_for
from returnflow.settings import Settings

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
OUTCOME = re.compile(r'id="outcome"[^>]*>(.*?)</p>', re.S)
PEOPLE = (
    ("agent", "agent-amy", "dev-token-agent-amy"),
    ("supervisor", "sup-sam", "dev-token-sup-sam"),
    ("returns team", "rt-lin", "dev-audit-token-lin"),
    ("warehouse clerk", "wh-zhao", "dev-staff-token-zhao"),
)


async def play(client: httpx.AsyncClient, settings: Settings, returns: list[dict[str, Any]]) -> None:
    base = base_url_for(settings, "workbench")
    async with httpx.AsyncClient(base_url=base, timeout=10) as wb:
        page = await wb.get("/signin", params={"lang": "en"})
        csrf = CSRF.search(page.text)
        assert csrf is not None
        r = await wb.post(
            "/signin", data={"csrf": csrf.group(1), "person_id": "agent-amy", "token": "dev-token-agent-amy"}
        )
        print(f"  sign in agent-amy           -> {r.status_code} {r.headers.get('location')}")
        rid = next((r for r in returns if r.get("kind") == "exchange"), returns[0])["return_id"]
        page = await wb.get(f"/returns/{rid}")
        form = CSRF.search(page.text)
        if page.status_code != 200 or form is None:
            print(f"  return page                 -> {page.status_code}")
            return
        r = await wb.post(
            f"/returns/{rid}/decisions",
            data={"csrf": form.group(1), "idem": f"demo-{rid}", "action": "grant_free_refund", "amount": "5.00"},
        )
        shown = OUTCOME.search(r.text)
        print(f"  grant 5.00 on {rid[:8]}      -> {r.status_code} {shown.group(1).strip() if shown else ''}")
    print(f"  open {base}/signin as:")
    for role, person, token in PEOPLE:
        print(f"    {role:<16} {person:<10} {token}")
