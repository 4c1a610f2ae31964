"""bench.alternate compares a report of an earlier version with this one's: the CPU per lifecycle as a
multiple of the same run's plumbing floor, and the steady phase's latencies when only one side has them."""

from __future__ import annotations

from typing import Any

from bench.alternate import LATENCIES, figures, side_by_side


def report(steady: bool) -> dict[str, Any]:
    lat = {name: {"p50_ms": 10.0, "p99_ms": 100.0} for name in LATENCIES}
    summary: dict[str, Any] = {
        "cpu_seconds_during_surge": {"returns": 6.0, "postgres": 4.0, "other_processes": 99.0},
        "lifecycles_complete": 1000,
        "lifecycles_per_s_overall": 50.0,
        "efficiency": 0.1,
        "latency": lat,
        "per_lifecycle": {"cpu_ms": 10.0, "http_requests": 4.0, "message_hops": 20.0},
        "http_floor": {"cpu_ms_per_request": 0.25},
        "baseline_cpu_ms_per_message": 0.05,
    }
    if steady:
        summary["at_share_of_capacity"] = {"offered_returns_per_s": 25.0, "latency": {"webhook_ack": {"p99_ms": 42.0}}}
    return {"summary": summary}


def test_cpu_per_lifecycle_is_a_multiple_of_the_floor_measured_in_the_same_run() -> None:
    f = figures(report(steady=False))
    # 10 s of the stack's CPU (not other processes') over 1000 lifecycles = 10 ms; floor 4 x 0.25 + 20 x 0.05 = 2 ms
    assert f["cpu_ms_per_lifecycle"] == 10.0
    assert f["cpu_per_lifecycle_times_floor"] == 5.0
    assert not any(k.startswith("steady_") for k in f)


def test_the_steady_phase_is_compared_when_only_this_version_runs_it() -> None:
    now = figures(report(steady=True))
    assert now["steady_webhook_ack_p99_ms"] == 42.0 and now["steady_request_to_first_sms_p99_ms"] is None
    results = {"base": [figures(report(steady=False))], "now": [now]}
    assert side_by_side(results, "steady_webhook_ack_p99_ms").split() == ["-", "->", "42.000", "now/base", "-"]
    assert side_by_side(results, "lifecycles_per_s_overall").split() == ["50.000", "->", "50.000", "now/base", "1.000"]
