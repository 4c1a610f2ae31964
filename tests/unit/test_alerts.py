"""The alert rules (apphost/alerts.py, rendered to deploy/prometheus/alerts.yaml and deploy/k8s/
prometheus-rules.yaml) under `promtool test rules`: each rule fires on a synthetic series of what goes
wrong and every rule stays quiet on a healthy system. Every series a rule reads, and every series the
cases feed it (with its labels), is one returnflow exports (its metric registry, loaded with every
service) or Prometheus' own `up`. Each rule has its runbook paragraph in docs/runbook.md.

promtool comes with Debian's `prometheus` package; `make test` installs it (`make promtool`)."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

from apphost import alerts, deploygen
from apphost.registry import SERVICES, spec_of

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "docs" / "runbook.md"
PROMETHEUS_OWN = {"up": ("job", "instance")}
SCRAPE_LABELS = {"job", "instance"}


@dataclass
class Case:
    """Input series for one rule, the minute to look, and the labels the alert must carry when it fires."""

    series: dict[str, str]
    at: str
    labels: dict[str, str] = field(default_factory=dict)


LAG = 'returnflow_consumer_group_lag{group="warehouse.lifecycle",topic="returns.requested",partition="0",instance="%s"}'
HTTP = 'returnflow_http_requests_total{route="/v1/webhooks/{source}/returns",status="%s",job="returns",instance="a"}'

FIRES: dict[str, Case] = {
    "ReturnflowDeadLettered": Case(
        {
            'returnflow_messages_total{consumer="refunds.lifecycle",topic="returns.requested",outcome="dead_lettered"}': (
                "0 0 0 1 1 1"
            )
        },
        "5m",
        {"consumer": "refunds.lifecycle", "topic": "returns.requested"},
    ),
    "ReturnflowOutboxStuck": Case(
        {'returnflow_outbox_oldest_age_seconds{service="returns",job="returns",instance="a"}': "0+60x10"},
        "5m",
        {"service": "returns"},
    ),
    "ReturnflowConsumerLagGrowing": Case(
        {LAG % "a": "0+10x20", LAG % "b": "0+10x20"}, "15m", {"group": "warehouse.lifecycle"}
    ),
    "ReturnflowHttp5xx": Case({HTTP % "200": "0+100x20", HTTP % "500": "0+5x20"}, "15m", {"job": "returns"}),
    "ReturnflowPaymentOutcomeUnknown": Case(
        {'returnflow_backlog_oldest_age_seconds{service="refunds",backlog="payments_unknown_outcome"}': "0+60x15"},
        "12m",
        {"service": "refunds"},
    ),
    "ReturnflowEscalationsOverSla": Case(
        {'returnflow_backlog_items{service="refunds",backlog="escalations_over_sla"}': "0 0 2x8"},
        "5m",
        {"service": "refunds"},
    ),
    "ReturnflowDiscrepancyOpen": Case(
        {'returnflow_backlog_oldest_age_seconds{service="audit",backlog="discrepancies_open"}': "86400+60x5"},
        "3m",
        {"service": "audit"},
    ),
    "ReturnflowSmsFailing": Case(
        {
            'returnflow_sms_total{provider="twilio",outcome="sent"}': "0+90x40",
            'returnflow_sms_total{provider="twilio",outcome="failed"}': "0+10x40",
        },
        "30m",
    ),
    "ReturnflowMerchantWebhooksFailing": Case(
        {'returnflow_backlog_oldest_age_seconds{service="notify",backlog="webhooks_failing"}': "3000+60x20"},
        "15m",
        {"service": "notify"},
    ),
    "ReturnflowDatabaseUnreachable": Case(
        {'returnflow_dependency_up{service="refunds",dependency="database",instance="a"}': "1 1 0 0 0 0"},
        "5m",
        {"service": "refunds"},
    ),
    "ReturnflowBrokerUnreachable": Case(
        {'returnflow_dependency_up{service="notify",dependency="kafka",instance="a"}': "1 1 0 0 0 0"},
        "5m",
        {"service": "notify"},
    ),
    "ReturnflowServiceDown": Case(
        {'up{job="refunds",instance="refunds:8083"}': "1 1 0 0 0 0"},
        "5m",
        {"job": "refunds", "instance": "refunds:8083"},
    ),
}

# A healthy, busy system, with what looks alarming but is not: a lag that is large but shrinking, a rare
# 503, one SMS in a hundred failing, a database that blinked for less than a minute, an escalation an hour
# old, an outbox row a few seconds old.
HEALTHY: dict[str, str] = {
    'returnflow_messages_total{consumer="refunds.lifecycle",topic="returns.requested",outcome="processed"}': (
        "0+100x40"
    ),
    'returnflow_messages_total{consumer="refunds.lifecycle",topic="returns.requested",outcome="dead_lettered"}': (
        "3x40"
    ),
    'returnflow_outbox_oldest_age_seconds{service="returns",job="returns",instance="a"}': "0 2 0 1 0 3 0 0 0 5 0",
    LAG % "a": "1000-50x20 0x20",
    'returnflow_consumer_group_lag{group="refunds.lifecycle",topic="returns.requested",partition="1",instance="a"}': (
        "0x40"
    ),
    HTTP % "202": "0+1000x40",
    HTTP % "503": "0+5x40",
    'returnflow_backlog_oldest_age_seconds{service="refunds",backlog="payments_unknown_outcome"}': ("0+60x9 0x30"),
    'returnflow_backlog_oldest_age_seconds{service="refunds",backlog="escalations_open"}': "3600+60x40",
    'returnflow_backlog_items{service="refunds",backlog="escalations_over_sla"}': "0x40",
    'returnflow_backlog_oldest_age_seconds{service="audit",backlog="discrepancies_open"}': "3600+60x40",
    'returnflow_backlog_oldest_age_seconds{service="notify",backlog="webhooks_failing"}': "0+60x30 0x10",
    'returnflow_sms_total{provider="twilio",outcome="sent"}': "0+99x40",
    'returnflow_sms_total{provider="twilio",outcome="failed"}': "0+1x40",
    'returnflow_dependency_up{service="refunds",dependency="database",instance="a"}': "1 1 0 1 1 1x35",
    'returnflow_dependency_up{service="notify",dependency="kafka",instance="a"}': "1x40",
    'up{job="refunds",instance="refunds:8083"}': "1x40",
}
HEALTHY_AT = ("5m", "15m", "30m", "40m")


def rule_test_file(rule_file: Path, names: list[str]) -> dict[str, Any]:
    tests: list[dict[str, Any]] = []
    for name in names:
        case = FIRES[name]
        tests.append(
            {
                "name": f"{name} fires",
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in case.series.items()],
                "alert_rule_test": [
                    {
                        "eval_time": case.at,
                        "alertname": name,
                        "exp_alerts": [{"exp_labels": {**case.labels, **severity(name)}}],
                    }
                ],
            }
        )
    tests.append(
        {
            "name": "a healthy system pages no one",
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in HEALTHY.items()],
            "alert_rule_test": [
                {"eval_time": at, "alertname": name, "exp_alerts": []} for at in HEALTHY_AT for name in names
            ],
        }
    )
    return {"rule_files": [str(rule_file)], "evaluation_interval": "1m", "tests": tests}


def severity(name: str) -> dict[str, str]:
    (alert,) = [a for a in alerts.ALERTS if a.name == name]
    return {"severity": alert.severity, "system": "returnflow"}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool not found: `make promtool` installs Debian's prometheus package (as root)")
    return found


def run_promtool_tests(tmp_path: Path, rule_file: Path, names: list[str]) -> subprocess.CompletedProcess[str]:
    """promtool 2.42 compares annotations too: the cases check each rule's expression, `for` and labels on a
    copy without annotations (their templates are checked by `promtool check rules`)."""
    rules = yaml.safe_load(rule_file.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    bare = tmp_path / f"{rule_file.stem}_bare.yaml"
    bare.write_text(yaml.safe_dump(rules, sort_keys=False))
    test_file = tmp_path / f"{rule_file.stem}_test.yaml"
    test_file.write_text(yaml.safe_dump(rule_test_file(bare, names), sort_keys=False))
    return subprocess.run([promtool(), "test", "rules", str(test_file)], capture_output=True, text=True, timeout=60)


def k8s_rule_file(tmp_path: Path) -> tuple[Path, list[str]]:
    """The PrometheusRule's `spec` is a rule file: what the operator hands Prometheus."""
    doc = next(d for d in yaml.safe_load_all(deploygen.PROMETHEUS_RULE.read_text()) if d)
    assert (doc["apiVersion"], doc["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    path = tmp_path / "k8s_rules.yaml"
    path.write_text(yaml.safe_dump(doc["spec"]))
    return path, [r["alert"] for g in doc["spec"]["groups"] for r in g["rules"]]


def compose_rule_names() -> list[str]:
    return [r["alert"] for g in yaml.safe_load(deploygen.ALERT_RULES.read_text())["groups"] for r in g["rules"]]


def test_every_rule_fires_on_trouble_and_stays_quiet_when_healthy_compose(tmp_path: Path) -> None:
    names = compose_rule_names()
    assert sorted(names) == sorted(FIRES)  # a case for every rule, a rule for every case
    result = run_promtool_tests(tmp_path, deploygen.ALERT_RULES, names)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_fires_on_trouble_and_stays_quiet_when_healthy_kubernetes(tmp_path: Path) -> None:
    rule_file, names = k8s_rule_file(tmp_path)
    assert set(names) == {a.name for a in alerts.ALERTS if not a.compose_only}
    result = run_promtool_tests(tmp_path, rule_file, names)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rule_tests_bite(tmp_path: Path) -> None:
    """A rule whose threshold is wrong fails its case: the cases are not vacuous."""
    rules = yaml.safe_load(deploygen.ALERT_RULES.read_text())
    broken = copy.deepcopy(rules)
    for rule in broken["groups"][0]["rules"]:
        if rule["alert"] == "ReturnflowPaymentOutcomeUnknown":
            rule["expr"] = rule["expr"].replace(str(alerts.PAYMENT_UNKNOWN_MAX_S), "6000")
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = run_promtool_tests(tmp_path, path, ["ReturnflowPaymentOutcomeUnknown"])
    assert result.returncode != 0 and "ReturnflowPaymentOutcomeUnknown" in result.stdout + result.stderr


def test_rule_files_are_valid_for_promtool(tmp_path: Path) -> None:
    for path in (deploygen.ALERT_RULES, k8s_rule_file(tmp_path)[0]):
        result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def exported() -> dict[str, tuple[str, ...]]:
    """Series name -> label names, from the metric registry with every service's modules loaded."""
    for name in SERVICES:
        spec_of(name)  # imports the service: its own metrics (e.g. returnflow_sms_total) register
    out: dict[str, tuple[str, ...]] = dict(PROMETHEUS_OWN)
    for name, collector in REGISTRY._names_to_collectors.items():
        if isinstance(collector, MetricWrapperBase) and name.startswith("returnflow_"):
            out[name] = tuple(collector._labelnames)
    return out


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    found: list[tuple[str, set[str]]] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append((node.name, {m.name for m in node.matchers.matchers}))

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def test_every_series_a_rule_reads_exists_with_its_labels() -> None:
    known = exported()
    for alert in alerts.ALERTS:
        used = selectors(alert.expr)
        assert used, alert.name
        for name, labels in used:
            assert name in known, f"{alert.name} reads {name}, which nothing exports"
            assert labels <= set(known[name]) | SCRAPE_LABELS, (alert.name, name, labels)
        grouped = set(re.findall(r"by \(([^)]*)\)", alert.expr))
        for by in grouped:
            for label in (x.strip() for x in by.split(",")):
                assert any(label in known[n] or label in SCRAPE_LABELS for n, _ in used), (alert.name, label)


def test_the_cases_feed_series_that_exist_with_their_labels() -> None:
    known = exported()
    for series in [s for c in FIRES.values() for s in c.series] + list(HEALTHY):
        parsed = promql_parser.parse(series)
        assert isinstance(parsed, promql_parser.VectorSelector)
        assert parsed.name in known, series
        labels = {m.name for m in parsed.matchers.matchers}
        assert labels - SCRAPE_LABELS == set(known[parsed.name]) - SCRAPE_LABELS, series


def cli_commands(capsys: pytest.CaptureFixture[str]) -> set[str]:
    from apphost import cli

    with pytest.raises(SystemExit):
        cli.main(["--help"])
    (choices,) = re.findall(r"\{([a-z,-]+)\}", capsys.readouterr().out)[:1]
    return set(choices.split(","))


def test_every_alert_has_its_runbook_paragraph_with_commands_that_exist(capsys: pytest.CaptureFixture[str]) -> None:
    commands = cli_commands(capsys)
    assert {"dlq", "topics", "tail", "timeline"} <= commands
    text = RUNBOOK.read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).strip().replace(" ", "-"): h for h in re.findall(r"^## (.+)$", text, re.M)
    }
    for alert in alerts.ALERTS:
        assert alert.runbook in anchors, f"docs/runbook.md has no '## ' heading for #{alert.runbook}"
        section = text.split(f"## {anchors[alert.runbook]}", 1)[1].split("\n## ", 1)[0]
        assert alert.name in section, alert.name
        used = re.findall(r"returnflow ([a-z-]+)", section)
        assert len(set(used)) >= 2 or len(used) >= 3, f"{alert.name}: the first three commands to run"
        assert set(used) <= commands, set(used) - commands


def runbook_anchors() -> set[str]:
    return {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).strip().replace(" ", "-")
        for h in re.findall(r"^## (.+)$", RUNBOOK.read_text(), re.M)
    }


def test_the_dashboard_shows_the_backlogs_and_broker_side_lag_with_a_runbook_link_per_panel() -> None:
    import json

    board = json.loads(deploygen.GRAFANA_DASHBOARD.read_text())
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert "Backlogs and broker-side lag" in rows
    exprs = " ".join(t["expr"] for p in board["panels"] for t in p.get("targets", []))
    for series in (
        "returnflow_consumer_group_lag",
        "returnflow_backlog_items",
        "returnflow_backlog_oldest_age_seconds",
    ):
        assert series in exprs, series
    for backlog in ("payments_unknown_outcome", "escalations_open", "discrepancies_open", "sms_queued", "scans_parked"):
        assert backlog in exprs, backlog
    anchors = runbook_anchors()
    linked = set()
    for panel in (p for p in board["panels"] if p["type"] != "row"):
        (link,) = panel["links"]
        url, _, anchor = link["url"].partition("#")
        assert url == alerts.RUNBOOK_URL, panel["title"]
        assert not anchor or anchor in anchors, (panel["title"], anchor)
        linked.add(anchor)
    # the alerts that have a panel to look at link to their paragraph
    assert {"consumer-lag-growing", "outbox-stuck", "payment-outcome-unknown", "escalations-over-sla"} <= linked
