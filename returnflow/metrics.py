"""Prometheus metrics shared by every service (one registry per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter(
    "returnflow_messages_total",
    "Kafka messages handled, by consumer group, topic and outcome (processed, duplicate, dead_lettered)",
    ["consumer", "topic", "outcome"],
)
BATCH_SECONDS = Histogram(
    "returnflow_consumer_batch_seconds",
    "Time to apply one consumed batch (one PostgreSQL transaction)",
    ["consumer"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
HANDLER_RETRIES = Counter(
    "returnflow_consumer_retries_total", "Handler attempts that failed and were retried", ["consumer"]
)
DATABASE_WAITS = Counter(
    "returnflow_consumer_database_waits_total",
    "Times a consumer found PostgreSQL unreachable and waited to try its batch again (nothing dead-lettered)",
    ["consumer"],
)
OUTBOX_PUBLISHED = Counter("returnflow_outbox_published_total", "Outbox rows published", ["service"])
OUTBOX_BACKLOG = Gauge("returnflow_outbox_backlog", "Unpublished outbox rows", ["service"], multiprocess_mode="max")
OUTBOX_AGE = Gauge(
    "returnflow_outbox_oldest_age_seconds", "Age of the oldest unpublished row", ["service"], multiprocess_mode="max"
)
COMMANDS_REFUSED = Counter(
    "returnflow_commands_refused_total",
    "People's commands refused, never executed, by service and reason (unsigned, bad_signature, stale, "
    "from_the_future, unknown_actor, malformed; and the services' own refusals: above_authority, ...)",
    ["service", "reason"],
)
HTTP_REQUESTS = Counter("returnflow_http_requests_total", "HTTP requests by route and status", ["route", "status"])
HTTP_SECONDS = Histogram(
    "returnflow_http_request_seconds",
    "HTTP request latency by route",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
REFUND_CYCLE = Histogram(
    "returnflow_refund_cycle_seconds",
    "Return requested -> refund paid, by basis",
    ["basis"],
    buckets=(1, 5, 30, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400, 7 * 86400),
)
EVENT_LOOP_LAG = Histogram(
    "returnflow_event_loop_lag_seconds",
    "How late a 50 ms timer fires on the service's event loop: CPU-bound work holding the loop, or the "
    "process waiting for a CPU; every HTTP request and consumed batch waits as long",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
CONSUMER_LAG = Gauge(
    "returnflow_consumer_lag",
    "Messages behind the partition's high-water mark after the last applied batch",
    ["consumer", "topic", "partition"],
    multiprocess_mode="max",
)

# Asked of the broker on a slow loop (returnflow/group_lag.py), not set by the consumer: it grows while a
# group's consumers are stopped. The embedded broker under-reports end offsets by up to a record batch.
CONSUMER_GROUP_LAG = Gauge(
    "returnflow_consumer_group_lag",
    "Messages a consumer group has still to read in a partition: the log end offset minus the group's "
    "committed offset, as the broker reports them",
    ["group", "topic", "partition"],
    multiprocess_mode="max",
)
# The services' work waiting for something (a payment's answer, a person, a parcel, a provider), from their
# own tables on a slow loop (returnflow/backlogs.py; each service's `views.backlogs`).
BACKLOG_ITEMS = Gauge(
    "returnflow_backlog_items",
    "Items waiting in a service's backlog (refunds_pending, payments_unknown_outcome, escalations_open, "
    "clawbacks_open, discrepancies_open, scans_parked, sms_queued, sms_deferred, ...)",
    ["service", "backlog"],
    multiprocess_mode="max",
)
BACKLOG_OLDEST_AGE = Gauge(
    "returnflow_backlog_oldest_age_seconds",
    "Age of the oldest item waiting in a service's backlog (0 when it is empty)",
    ["service", "backlog"],
    multiprocess_mode="max",
)
DEPENDENCY_UP = Gauge(
    "returnflow_dependency_up",
    "Whether the service reached its database / its Kafka brokers on its last try (1) or not (0)",
    ["service", "dependency"],
    multiprocess_mode="min",
)


def exposition() -> bytes:
    """The metrics text of this process, or of every worker of this service when it runs several
    (PROMETHEUS_MULTIPROC_DIR set by `returnflow serve`)."""
    import os

    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest()
