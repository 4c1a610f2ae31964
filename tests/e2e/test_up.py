"""`returnflow up` as a user runs it: every service ready, Ctrl-C leaves nothing behind, and a stop
with events in flight followed by a start loses nothing (the embedded broker comes back empty)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from apphost.embedded import free_port, port_is_free
from apphost.registry import DEV_OPS_TOKEN, SERVICES
from services.refunds.dev import DEV_ROSTER
from tests.kafkautil import read_topic, values
from tests.webhooks import return_body, signed

DEV_READ = {"authorization": f"Bearer {DEV_OPS_TOKEN}"}
AGENT_TOKEN = next(e.token for e in DEV_ROSTER if e.role == "agent")

pytestmark = pytest.mark.e2e


def stack_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETURNFLOW_")}
    env.update(
        {
            "RETURNFLOW_DATA_DIR": str(data_dir),
            "RETURNFLOW_EMBEDDED_KAFKA_PORT": str(free_port()),
            "RETURNFLOW_KAFKA_SESSION_TIMEOUT_MS": "2000",
            "RETURNFLOW_KAFKA_HEARTBEAT_INTERVAL_MS": "400",
            "RETURNFLOW_OUTBOX_BROKER_CHECK_INTERVAL_S": "0.5",
            "RETURNFLOW_WEBHOOK_SECRETS": '{"generic": ["test-secret-new"]}',
            "RETURNFLOW_RETURNS_WORKERS": "2",
        }
    )
    for name in SERVICES:
        env[f"RETURNFLOW_{name.upper()}_PORT"] = str(free_port())
    return env


def start(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "apphost.cli", "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_ready(proc: subprocess.Popen[str], timeout_s: float = 120) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError("returnflow up exited early:\n" + "".join(lines))
        lines.append(line)
        if "returnflow: running" in line:
            return lines
    raise AssertionError("not ready in time:\n" + "".join(lines))


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    return out


def base(env: dict[str, str], name: str) -> str:
    return f"http://127.0.0.1:{env[f'RETURNFLOW_{name.upper()}_PORT']}"


async def post_returns(env: dict[str, str], n: int) -> list[str]:
    async with httpx.AsyncClient(base_url=base(env, "returns"), timeout=10) as client:
        reqs = [signed(return_body()) for _ in range(n)]
        responses = await asyncio.gather(
            *(client.post("/v1/webhooks/generic/returns", content=r, headers=h) for r, h in reqs)
        )
    assert all(r.status_code == 202 for r in responses), [r.text for r in responses if r.status_code != 202]
    return [r.json()["return_id"] for r in responses]


def _zombie(p: psutil.Process) -> bool:
    try:
        return p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_up_ready_then_ctrl_c_leaves_nothing_and_restart_loses_nothing(stack_root):
    tmp_path = stack_root
    env = stack_env(tmp_path / "data")
    proc = start(env)
    try:
        wait_ready(proc)
        async with httpx.AsyncClient(timeout=5) as client:
            for name in SERVICES:
                r = await client.get(f"{base(env, name)}/readyz")
                assert r.status_code == 200, (name, r.text)
                assert (await client.get(f"{base(env, name)}/metrics")).status_code == 200
        # starting twice: one clear line, not a traceback
        second = subprocess.run(
            [sys.executable, "-m", "apphost.cli", "up"], env=env, capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 1
        assert second.stderr.strip().startswith("returnflow: returnflow is already running")
        assert "Traceback" not in second.stderr + second.stdout
        # a port already taken (another data dir, same ports)
        other = dict(env, RETURNFLOW_DATA_DIR=str(tmp_path / "other"))
        third = subprocess.run(
            [sys.executable, "-m", "apphost.cli", "up"], env=other, capture_output=True, text=True, timeout=60
        )
        assert third.returncode == 1 and "already in use" in third.stderr and "Traceback" not in third.stderr

        ids = await post_returns(env, 200)
        # the returns service runs two workers here (stack_env): /metrics adds both up
        async with httpx.AsyncClient(timeout=5) as client:
            text = (await client.get(f"{base(env, 'returns')}/metrics")).text
        accepted = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("returnflow_http_requests_total{")
            and "/v1/webhooks/generic/returns" in line
            and 'status="202"' in line
        )
        assert accepted == 200, accepted
        tree = descendants(proc.pid)
        assert len(tree) >= len(SERVICES) + 1  # services and the broker
        out = stop(proc)  # right away: events may still be in the outbox
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    # every process of the stack exits as it stops: wait for that with a deadline (a loaded machine reaps late)
    _, alive = psutil.wait_procs(tree, timeout=15)
    assert [p for p in alive if not _zombie(p)] == [], alive
    assert not [
        p for p in psutil.process_iter(["cmdline"]) if str(tmp_path / "data") in " ".join(p.info["cmdline"] or [])
    ]
    for name in SERVICES:
        assert port_is_free("127.0.0.1", int(env[f"RETURNFLOW_{name.upper()}_PORT"]))
    assert port_is_free("127.0.0.1", int(env["RETURNFLOW_EMBEDDED_KAFKA_PORT"]))

    # start again: same data dir, a new (empty) embedded broker
    proc = start(env)
    try:
        wait_ready(proc)
        async with httpx.AsyncClient(base_url=base(env, "returns"), timeout=10, headers=DEV_READ) as client:
            for rid in ids:
                assert (await client.get(f"/v1/returns/{rid}")).status_code == 200
            # reads take a reader's token: the development ones work on `returnflow up`, none is refused
            anonymous = await client.get(f"/v1/returns/{ids[0]}", headers={"authorization": ""})
            assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
            agent = {"authorization": f"Bearer {AGENT_TOKEN}"}
            assert (await client.get(f"/v1/returns/{ids[0]}/timeline", headers=agent)).status_code == 200
        bootstrap = f"127.0.0.1:{env['RETURNFLOW_EMBEDDED_KAFKA_PORT']}"
        records = await read_topic(bootstrap, "returns.requested", expect=200, timeout_s=30)
        assert {v["return_id"] for v in values(records)} == set(ids)
    finally:
        out = stop(proc)
    assert proc.returncode == 0, out


async def test_external_servers_start_nothing_embedded(tmp_path, pg_server, dsn):
    from apphost.embedded import EmbeddedKafka

    external = EmbeddedKafka(free_port(), log_path=tmp_path / "external-broker.log").start()  # stands in for a cluster
    env = stack_env(tmp_path / "data")
    env["RETURNFLOW_KAFKA_BOOTSTRAP"] = external.bootstrap
    env["RETURNFLOW_DATABASE_URL"] = dsn
    # External servers: no development fixture is given and none would be accepted; the operator sets them.
    env["RETURNFLOW_REFUNDS_GATEWAY_API_KEY"] = "sk-e2e-gateway"
    env["RETURNFLOW_WAREHOUSE_DEVICES"] = '{"dock-9": {"warehouse_id": "WH-E2E", "token": "e2e-device-token"}}'
    env["RETURNFLOW_WORKBENCH_SESSION_KEY"] = "e2e-workbench-session-key"
    proc = start(env)
    try:
        wait_ready(proc)
        names = {p.name() for p in descendants(proc.pid)}
        assert not any("tansu" in n or n == "postgres" for n in names), names
        assert not (tmp_path / "data" / "postgres").exists()
        ids = await post_returns(env, 5)
        records = await read_topic(external.bootstrap, "returns.requested", expect=5)
        assert {v["return_id"] for v in values(records)} == set(ids)
    finally:
        out = stop(proc)
        external.stop()
    assert proc.returncode == 0, out
