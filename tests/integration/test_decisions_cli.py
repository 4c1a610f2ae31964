"""`returnflow login | grant | approve | reject` act with the credential of the person using them, through
the refunds HTTP API, and tell the real outcome (issue 12 finding 1, issue 15 "prints 'sent' and exits 0"):
exit 0 done, 3 escalated, 1 refused or no credential."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.integration.money_path_support import TOKENS, platform
from tests.kafkautil import wait_for


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETURNFLOW_")}
    env["RETURNFLOW_CREDENTIALS"] = str(tmp_path / "creds" / "credentials.json")
    env.update(extra)
    return env


async def cli(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI as a separate process; awaited, so the services in this event loop keep answering it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "apphost.cli",
        *args,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), 60)
    assert proc.returncode is not None
    return subprocess.CompletedProcess(list(args), proc.returncode, out.decode(), err.decode())


async def test_without_a_credential_the_cli_refuses_to_act(tmp_path):
    out = await cli(env_for(tmp_path), "grant", "6f1c2a4e-2d0b-4d8e-9a55-0d6c1b7e9f31", "--amount", "20000")
    assert out.returncode == 1
    assert out.stderr.startswith("returnflow: no credential: run `returnflow login`") and "Traceback" not in out.stderr
    out = await cli(env_for(tmp_path), "grant", "6f1c2a4e-2d0b-4d8e-9a55-0d6c1b7e9f31", "--actor", "owner-oz")
    assert out.returncode == 2 and "--actor" in out.stderr  # no more acting by a claimed actor id


async def test_grant_prints_the_real_outcome_with_the_persons_own_token(settings, service_runner, tmp_path):
    async with platform(settings, service_runner) as p:
        rid = await p.new_return(kind="exchange", paid_total=50_000)
        await wait_for(lambda: p.refunds_pool.fetchval("SELECT 1 FROM returns WHERE return_id = $1", rid))
        env = env_for(tmp_path, RETURNFLOW_REFUNDS_URL=str(p.refunds[0].base_url))

        # an unknown token: refused, nothing done
        out = await cli(env, "grant", str(rid), "--amount", "500", "--token", "who-knows-0123456789")
        assert out.returncode == 1 and out.stderr.startswith("refused: the refunds service does not know this token")

        # an agent's token (RETURNFLOW_TOKEN), above an agent's 20.00: escalated to a supervisor, exit 3
        agent = {**env, "RETURNFLOW_TOKEN": TOKENS["agent-amy"]}
        out = await cli(agent, "grant", str(rid), "--amount", "3000", "--note", "goodwill")
        assert out.returncode == 3, (out.stdout, out.stderr)
        assert out.stdout.startswith("escalated to supervisor:") and "agent-amy (agent)" in out.stdout

        # `returnflow login` checks the token with the service and saves it owner-only
        out = await cli(env, "login", stdin=TOKENS["agent-bo"] + "\n")
        assert out.returncode == 0, out.stderr
        assert "logged in as agent-bo (agent)" in out.stdout
        creds = Path(env["RETURNFLOW_CREDENTIALS"])
        assert stat.S_IMODE((await asyncio.to_thread(creds.stat)).st_mode) == 0o600

        # within authority, with the saved credential: done, exit 0, attributed to the token's person
        out = await cli(env, "grant", str(rid), "--amount", "1500")
        assert out.returncode == 0, (out.stdout, out.stderr)
        assert out.stdout.startswith("done: refunded 1500") and "agent-bo (agent)" in out.stdout
        (paid,) = await p.wait_issued(rid)
        assert (paid["amount"], paid["actor_id"]) == (1500, "agent-bo")

        # refused by the rules: exit 1 with the reason
        out = await cli(env, "reject", str(rid))
        assert out.returncode == 1 and out.stderr.startswith("refused: a agent cannot reject"), out.stderr

        # a login with an unknown token saves nothing new
        out = await cli(env, "login", "--token", "who-knows-0123456789")
        assert out.returncode == 1 and "does not know this token" in out.stderr
        assert "agent-bo" in await asyncio.to_thread(creds.read_text)
