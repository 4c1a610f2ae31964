"""The alert rules, written once and rendered for both deployments by `make docs` (apphost/deploygen.py):

- deploy/prometheus/alerts.yaml      a Prometheus rule file, loaded by compose's Prometheus (prometheus.yml)
- deploy/k8s/prometheus-rules.yaml   the same groups as a prometheus-operator `PrometheusRule`

Each rule names its runbook paragraph (docs/runbook.md, `## <anchor>`); tests/unit/test_alerts.py runs
`promtool test rules` on both files (each rule fires on a synthetic series and stays quiet on a healthy one)
and checks that every series a rule reads is one returnflow exports.

Rules aggregate by the labels the metrics carry (service, group, consumer, topic), not by the scrape job:
the compose Prometheus names its jobs after the services, a Kubernetes Prometheus that scrapes the pods'
`prometheus.io/*` annotations does not.
"""

from __future__ import annotations

from dataclasses import dataclass

from apphost.registry import SERVICES

RUNBOOK = "docs/runbook.md"
# Where people open the runbook from the dashboard's panel links: the repository path by default. Point it at
# where your docs are served (your Git host's page of docs/runbook.md) and run `make docs`.
RUNBOOK_URL = RUNBOOK
OUTBOX_MAX_AGE_S = 60
PAYMENT_UNKNOWN_MAX_S = 10 * 60
DISCREPANCY_MAX_AGE_S = 24 * 3600
HTTP_5XX_SHARE = 0.01
SMS_FAILED_SHARE = 0.05
WEBHOOK_FAILING_MAX_S = 3600  # a merchant's endpoint refusing deliveries this long: tell them before the 24 h end


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: str  # page | ticket
    summary: str
    description: str
    runbook: str  # the anchor of its paragraph in docs/runbook.md
    compose_only: bool = False

    def rule(self) -> dict[str, object]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity, "system": "returnflow"},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": f"{RUNBOOK_URL}#{self.runbook}",
            },
        }


_LAG = "max by (group, topic, partition) ({})"  # every replica of a service reports its groups: count once

ALERTS: tuple[Alert, ...] = (
    Alert(
        "ReturnflowDeadLettered",
        'sum by (consumer, topic) (increase(returnflow_messages_total{outcome="dead_lettered"}[10m])) > 0',
        "0m",
        "ticket",
        "{{ $labels.consumer }} dead-lettered messages of {{ $labels.topic }}",
        "{{ $value | humanize }} message(s) of {{ $labels.topic }} went to {{ $labels.topic }}.dlq in the last "
        "10 minutes: a consumer could not apply them after its retries.",
        "dlq-messages-arriving",
    ),
    Alert(
        "ReturnflowOutboxStuck",
        f"max by (service) (returnflow_outbox_oldest_age_seconds) > {OUTBOX_MAX_AGE_S}",
        "1m",
        "page",
        "{{ $labels.service }}'s outbox holds a row older than 60 s",
        "The oldest unpublished event of {{ $labels.service }} is {{ $value | humanizeDuration }} old: its relay "
        "cannot publish to Kafka, so nothing it decided reaches the other services.",
        "outbox-stuck",
    ),
    Alert(
        "ReturnflowConsumerLagGrowing",
        f"sum by (group) ({_LAG.format('delta(returnflow_consumer_group_lag[5m])')}) > 0 "
        f"and on (group) sum by (group) ({_LAG.format('returnflow_consumer_group_lag')}) > 0",
        "5m",
        "page",
        "consumer group {{ $labels.group }} falls further behind",
        "The lag of {{ $labels.group }} (committed offsets against the log end, as the broker reports them) has "
        "grown for 5 minutes: its consumers are stopped, stuck or slower than what arrives.",
        "consumer-lag-growing",
    ),
    Alert(
        "ReturnflowHttp5xx",
        'sum by (job) (rate(returnflow_http_requests_total{status=~"5.."}[5m])) '
        f"/ sum by (job) (rate(returnflow_http_requests_total[5m])) > {HTTP_5XX_SHARE}",
        "5m",
        "page",
        "more than 1 % of {{ $labels.job }}'s HTTP requests fail with 5xx",
        "{{ $value | humanizePercentage }} of the requests answered 5xx over 5 minutes (503: the database was "
        "unavailable; 500: a bug).",
        "http-5xx",
    ),
    Alert(
        "ReturnflowPaymentOutcomeUnknown",
        'max by (service) (returnflow_backlog_oldest_age_seconds{backlog="payments_unknown_outcome"}) '
        f"> {PAYMENT_UNKNOWN_MAX_S}",
        "0m",
        "page",
        "a refund's payment outcome has been unknown for more than 10 minutes",
        "A refund was sent to the payment gateway and no answer came back for {{ $value | humanizeDuration }}; "
        "it is asked again with the same idempotency key, but the customer is waiting for money.",
        "payment-outcome-unknown",
    ),
    Alert(
        "ReturnflowEscalationsOverSla",
        'max by (service) (returnflow_backlog_items{backlog="escalations_over_sla"}) > 0',
        "0m",
        "ticket",
        "refund escalations have waited for a person longer than their shop's SLA",
        "{{ $value }} open escalation(s) have waited longer than their shop's SLA (shops file escalation_sla_hours, "
        "else 4 h); a supervisor or manager has to approve or reject them.",
        "escalations-over-sla",
    ),
    Alert(
        "ReturnflowDiscrepancyOpen",
        'max by (service) (returnflow_backlog_oldest_age_seconds{backlog="discrepancies_open"}) '
        f"> {DISCREPANCY_MAX_AGE_S}",
        "0m",
        "ticket",
        "an audit discrepancy has been open for more than 24 hours",
        "The oldest open stock discrepancy is {{ $value | humanizeDuration }} old; someone who attested no side "
        "has to recount and resolve it.",
        "discrepancies-open",
    ),
    Alert(
        "ReturnflowSmsFailing",
        'sum(rate(returnflow_sms_total{outcome="failed"}[15m])) '
        f'/ sum(rate(returnflow_sms_total{{outcome=~"sent|failed"}}[15m])) > {SMS_FAILED_SHARE}',
        "10m",
        "ticket",
        "more than 5 % of SMS fail",
        "{{ $value | humanizePercentage }} of the SMS sent over 15 minutes failed at the provider.",
        "sms-failing",
    ),
    Alert(
        "ReturnflowMerchantWebhooksFailing",
        'max by (service) (returnflow_backlog_oldest_age_seconds{backlog="webhooks_failing"}) '
        f"> {WEBHOOK_FAILING_MAX_S}",
        "0m",
        "ticket",
        "a merchant's webhook endpoint has refused deliveries for more than an hour",
        "The oldest delivery still being retried was recorded {{ $value | humanizeDuration }} ago; retries stop "
        "after 24 hours and the merchant's systems miss those status changes.",
        "merchant-webhooks-failing",
    ),
    Alert(
        "ReturnflowDatabaseUnreachable",
        'min by (service) (returnflow_dependency_up{dependency="database"}) == 0',
        "1m",
        "page",
        "{{ $labels.service }} cannot reach PostgreSQL",
        "{{ $labels.service }} failed to query its database for a minute: it answers 503 and its consumers wait.",
        "database-unreachable",
    ),
    Alert(
        "ReturnflowBrokerUnreachable",
        'min by (service) (returnflow_dependency_up{dependency="kafka"}) == 0',
        "1m",
        "page",
        "{{ $labels.service }} cannot reach Kafka",
        "{{ $labels.service }} has not reached the brokers for a minute: its webhooks are still accepted into its "
        "outbox, but nothing is published or consumed.",
        "broker-unreachable",
    ),
    Alert(
        "ReturnflowServiceDown",
        f'up{{job=~"{"|".join(SERVICES)}"}} == 0',
        "1m",
        "page",
        "Prometheus cannot scrape {{ $labels.job }}",
        "{{ $labels.instance }} did not answer /metrics for a minute: the process is down or hung. (On "
        "Kubernetes the Deployment's probes restart it; see kube-state-metrics.)",
        "service-down",
        compose_only=True,
    ),
)


def groups(k8s: bool = False) -> list[dict[str, object]]:
    return [
        {
            "name": "returnflow",
            "rules": [a.rule() for a in ALERTS if not (k8s and a.compose_only)],
        }
    ]
