"""`returnflow roster seed` and `roster list` against a real PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from returnflow.commands import new_keypair

_, ANA_PUBLIC = new_keypair()


def run(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETURNFLOW_")}
    env["RETURNFLOW_DATABASE_URL"] = dsn
    return subprocess.run(
        [sys.executable, "-m", "apphost.cli", "roster", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_seed_then_list(dsn, tmp_path):
    roster = tmp_path / "roster.json"
    roster.write_text(
        json.dumps(
            [
                {
                    "actor_id": "ana",
                    "role": "supervisor",
                    "name": "Ana",
                    "token": "token-of-ana-0123456",
                    "public_key": ANA_PUBLIC,
                },
                {"actor_id": "bo", "role": "agent", "name": "Bo", "token": "token-of-bo-01234567", "active": False},
            ]
        )
    )
    out = run(dsn, "seed", str(roster))
    assert out.returncode == 0, out.stderr
    listed = run(dsn, "list")
    assert listed.returncode == 0, listed.stderr
    lines = {
        line.split()[0]: line.split()
        for line in listed.stdout.splitlines()
        if line.startswith("  ") and "actor" not in line
    }
    assert lines["ana"][1] == "supervisor" and lines["ana"][-1] == "active"
    assert lines["bo"][1] == "agent" and lines["bo"][-1] == "inactive"
    assert "token-of-ana" not in listed.stdout  # tokens are never shown
    assert lines["ana"][3] == ANA_PUBLIC and lines["bo"][3] == "-"  # public keys are
    bad = tmp_path / "bad.json"
    bad.write_text('[{"actor_id": "x", "role": "emperor"}]')
    out = run(dsn, "seed", str(bad))
    assert out.returncode != 0 and "roster file" in out.stderr and "Traceback" not in out.stderr
    bad.write_text('[{"actor_id": "x", "role": "agent", "public_key": "bm90IGEga2V5"}]')
    out = run(dsn, "seed", str(bad))
    assert out.returncode != 0 and "public_key" in out.stderr and "Ed25519" in out.stderr, out.stderr
