"""Before/after on a noisy machine: run the surge benchmark of an earlier commit and of this checkout in
turns (base, now, base, now, ...), each with its own code, and report the medians side by side.

  .venv/bin/python -m bench.alternate --base b01d23b --runs 3 -- --peak 200 --ramp-s 20 --hold-s 30

The earlier commit is checked out in a temporary git worktree and run from there (its own
bench/surge.py and services); the reports are read for what both versions write.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LATENCIES = ("webhook_ack", "moving_scan_to_refund_issued", "request_to_first_sms", "receipt_to_dual_check_verified")


def figures(report: dict[str, Any]) -> dict[str, float | None]:
    s = report["summary"]
    cpu = s["cpu_seconds_during_surge"]
    done = max(1, s["lifecycles_complete"])
    lat = s["latency"]
    out = {
        "lifecycles_per_s_overall": s["lifecycles_per_s_overall"],
        "cpu_ms_per_lifecycle": 1000 * sum(v for k, v in cpu.items() if k != "other_processes") / done,
        "efficiency": s["efficiency"],
    }
    per = s.get("per_lifecycle", {})
    if "http_floor" in s and per:  # CPU per lifecycle ÷ the plumbing floor of the same run (issue 17)
        floor_ms = per["http_requests"] * s["http_floor"]["cpu_ms_per_request"]
        floor_ms += per["message_hops"] * s["baseline_cpu_ms_per_message"]
        out["cpu_per_lifecycle_times_floor"] = out["cpu_ms_per_lifecycle"] / floor_ms if floor_ms else None
    for name in LATENCIES:
        for q in ("p50_ms", "p99_ms"):
            out[f"{name}_{q}"] = lat[name][q]
    steady = s.get("at_share_of_capacity")  # a version that runs the steady phase (bench.surge --share-s)
    if steady:
        out["steady_offered_returns_per_s"] = steady["offered_returns_per_s"]
        for name in LATENCIES:
            out[f"steady_{name}_p99_ms"] = steady["latency"].get(name, {}).get("p99_ms")
    return out


def run(tree: Path, args: list[str], out: Path) -> dict[str, float | None]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, "-m", "bench.surge", *args, "--out", str(out)]
    with open(out.with_suffix(".log"), "wb") as log:
        subprocess.run(cmd, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    return figures(json.loads(out.read_text()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="the earlier commit")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("surge_args", nargs="*", help="arguments for bench.surge (after --)")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rf-alternate-"))
    base_tree = tmp / "base"
    subprocess.run(["git", "worktree", "add", "--detach", str(base_tree), a.base], cwd=ROOT, check=True)
    results: dict[str, list[dict[str, float | None]]] = {"base": [], "now": []}
    try:
        for i in range(1, a.runs + 1):
            for side, tree in (("base", base_tree), ("now", ROOT)):
                results[side].append(run(tree, a.surge_args, tmp / f"{side}-{i}.json"))
                print(f"run {i} {side}: {json.dumps(results[side][-1])}", flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, check=False)
    print(f"\nmedians of {a.runs} alternating runs ({a.base} vs this checkout; reports in {tmp})")
    for key in results["now"][0]:
        print(f"  {key:42s} {side_by_side(results, key)}")


def median(values: list[float | None]) -> float | None:
    """The median of what a side measured (None: that version does not report it, or never got there)."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def side_by_side(results: dict[str, list[dict[str, float | None]]], key: str) -> str:
    before = median([r.get(key) for r in results["base"]])
    now = median([r.get(key) for r in results["now"]])
    shown = [f"{v:10.3f}" if v is not None else f"{'-':>10s}" for v in (before, now)]
    ratio = f"{now / before:.3f}" if before and now is not None else "-"
    return f"{shown[0]} -> {shown[1]}   now/base {ratio}"


if __name__ == "__main__":
    main()
