"""The after-sales team's side of `returnflow up`, for the workbench's browser test and `make screenshots`:
one stack with the roster seeded, returns filed, people signed in through the sign-in page."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from playwright.async_api import Page

from tests.e2e.customer_support import customer_env, file_return
from tests.e2e.test_up import base

PEOPLE = {
    "agent": ("agent-amy", "dev-token-agent-amy"),
    "supervisor": ("sup-sam", "dev-token-sup-sam"),
    "returns_team": ("rt-lin", "dev-audit-token-lin"),
    "returns_team_2": ("rt-ana", "dev-audit-token-ana"),
    "warehouse": ("wh-zhao", "dev-staff-token-zhao"),
}
DESK = {"width": 1280, "height": 900}


def workbench_env(data_dir: Path) -> dict[str, str]:
    env = customer_env(data_dir)
    env["RETURNFLOW_WORKBENCH_PARKED_AFTER_S"] = "0"
    return env


def seed_roster(env: dict[str, str]) -> None:
    """`returnflow roster seed`: the development roster (agent-amy, sup-sam, ...) with their dev tokens."""
    done = subprocess.run(
        [sys.executable, "-m", "apphost.cli", "roster", "seed"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


async def file_parcel_return(env: dict[str, str]) -> tuple[str, str]:
    """A return_and_refund with its tracking number: (return id, tracking number)."""
    tracking = f"SF{uuid.uuid4().int % 10**10:010d}"
    rid, _ = await file_return(env, "en", tracking_no=tracking, paid_total=12000)
    return rid, tracking


async def sign_in(page: Page, env: dict[str, str], who: str, lang: str = "en", then: str | None = None) -> None:
    """Through the sign-in page, with the keyboard (id, Tab, token, Enter); `then`: where to land."""
    person, token = PEOPLE[who]
    await page.goto(f"{base(env, 'workbench')}/signin?" + urlencode({"lang": lang, **({"next": then} if then else {})}))
    await page.wait_for_selector("#person_id:focus")  # autofocus: the id field has the focus
    await page.keyboard.type(person)
    await page.keyboard.press("Tab")
    await page.keyboard.type(token)
    async with page.expect_navigation():
        await page.keyboard.press("Enter")


def wb(env: dict[str, str], path: str) -> str:
    return f"{base(env, 'workbench')}{path}"


async def form_values(page: Page, selector: str) -> dict[str, Any]:
    return await page.eval_on_selector(selector, "f => Object.fromEntries(new FormData(f))")
