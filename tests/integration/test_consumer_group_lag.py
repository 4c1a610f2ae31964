"""Consumer lag from the broker's side: a service measures its consumer groups' committed offsets against
the partitions' end offsets (returnflow/group_lag.py) and serves them as `returnflow_consumer_group_lag`.
A consumer that stopped no longer commits, so its lag grows as events arrive — where the consumer's own
`returnflow_consumer_lag`, set after each applied batch, keeps its last value. A broker that stops
answering shows as `returnflow_dependency_up{dependency="kafka"} 0`."""

from __future__ import annotations

import signal
from collections import defaultdict

import httpx
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from apphost.ops import backlogs_cmd
from services.warehouse import SPEC as WAREHOUSE
from tests.idle import wait_idle
from tests.kafkautil import wait_for

GROUP = "warehouse.lifecycle"
TOPIC = "returns.requested"


async def scrape(client: httpx.AsyncClient) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    r = await client.get("/metrics")
    assert r.status_code == 200
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[s.name][tuple(sorted(s.labels.items()))] = s.value
    return out


def group_lag(metrics: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str) -> float | None:
    """The group's lag summed over the partitions of TOPIC (None: not measured yet)."""
    values = [
        v
        for k, v in metrics.get(name, {}).items()
        if dict(k).get("group", dict(k).get("consumer")) == GROUP and dict(k)["topic"] == TOPIC
    ]
    return sum(values) if values else None


async def test_a_stopped_consumers_lag_grows_and_a_hung_broker_reads_as_down(
    settings, kafka, service_runner, monkeypatch, capsys
):
    fast = settings.model_copy(update={"consumer_group_lag_interval_s": 0.2})
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
    await producer.start()
    try:
        async with service_runner(WAREHOUSE, fast) as svc, httpx.AsyncClient(base_url=svc.base_url) as client:
            await wait_idle(svc)

            async def lag_is(expected: float) -> bool:
                return group_lag(await scrape(client), "returnflow_consumer_group_lag") == expected

            await wait_for(lambda: lag_is(0), timeout_s=15)

            # The consumer stops (its task died, or it hangs); the process and its metrics endpoint live on.
            for sub in svc.runtime.broker.subscribers:
                await sub.stop()
            for i in range(12):  # one record batch each: the embedded broker's end offsets are then exact
                await producer.send_and_wait(TOPIC, b"{}", key=f"r-{i}".encode())
            await wait_for(lambda: lag_is(12), timeout_s=15)
            for i in range(5):
                await producer.send_and_wait(TOPIC, b"{}", key=f"s-{i}".encode())
            await wait_for(lambda: lag_is(17), timeout_s=15)
            frozen = group_lag(await scrape(client), "returnflow_consumer_lag")
            assert frozen is None or frozen == 0  # the consumer's own gauge never saw these events

            # `returnflow backlogs` shows the on-call engineer the same, from the service's /metrics
            monkeypatch.setenv("RETURNFLOW_WAREHOUSE_PORT", str(svc.port))
            capsys.readouterr()
            assert await backlogs_cmd(fast, ["warehouse"]) == 0
            table = {tuple(line.split()[:2]): line.split()[2:] for line in capsys.readouterr().out.splitlines()[1:]}
            assert table[("warehouse", "lag")][:2] == [GROUP, "17"]
            assert table[("warehouse", "scans_parked")] == ["0"]
            assert table[("warehouse", "kafka")] == ["reachable", "yes"]
            assert table[("warehouse", "database")] == ["reachable", "yes"]

            up = {"dependency": "kafka", "service": "warehouse"}

            async def kafka_up_is(value: float) -> bool:
                return (await scrape(client))["returnflow_dependency_up"].get(tuple(sorted(up.items()))) == value

            assert await kafka_up_is(1)
            kafka.proc.send_signal(signal.SIGSTOP)
            try:
                await wait_for(lambda: kafka_up_is(0), timeout_s=20)
            finally:
                kafka.proc.send_signal(signal.SIGCONT)
            await wait_for(lambda: kafka_up_is(1), timeout_s=20)
    finally:
        await producer.stop()
