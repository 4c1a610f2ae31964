"""Consumer lag as the broker sees it: each consumer group's committed offsets against the partitions' log
end offsets, asked of the broker on a slow loop by every service for its own groups.

`returnflow_consumer_lag` (set by the consumer after each applied batch) freezes when a consumer stops: it
keeps its last, low value. This gauge is computed from what the broker holds, by a separate client that is
not the group's member, so it grows while the group's consumers are stopped, stuck or gone, and any
replica of a service reports the lag of partitions held by another (stopped) replica.

Cost per round and service: one ListOffsets per broker and one OffsetFetch per group (the coordinator's);
a few milliseconds every `consumer_group_lag_interval_s` (15 s, Prometheus' scrape interval).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from returnflow import metrics
from returnflow.logging import get_logger

log = get_logger("returnflow.group_lag")


def lag_of(end: int, committed: int | None, start: int) -> int:
    """Messages a group has still to read in one partition. Never committed: it reads from the log start
    (`auto_offset_reset="earliest"`). The embedded broker reports a partition's end as the base offset of
    its last record batch + 1 (FINDINGS.md), at most the true end, so a committed position can pass it:
    never below 0."""
    position = start if committed is None or committed < 0 else committed
    return max(0, end - position)


class GroupLag:
    """Reads the committed offsets of `groups` (group -> the topics it consumes) and the end offsets of
    those topics' partitions, and sets `returnflow_consumer_group_lag{group,topic,partition}`."""

    def __init__(self, bootstrap: str, groups: Mapping[str, Sequence[str]], options: Mapping[str, Any]) -> None:
        self.bootstrap = bootstrap
        self.groups = {g: list(t) for g, t in groups.items()}
        self.options = dict(options)
        self._admin: AIOKafkaAdminClient | None = None
        self._offsets: AIOKafkaConsumer | None = None  # no group: only asks for log start and end offsets

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None or self._offsets is None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000, **self.options)
            offsets = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False, **self.options
            )
            try:
                await asyncio.wait_for(admin.start(), 10)
                await asyncio.wait_for(offsets.start(), 10)
            except BaseException:
                await self._close(admin, offsets)
                raise
            self._admin, self._offsets = admin, offsets
        return self._admin, self._offsets

    async def measure(self) -> dict[tuple[str, str, int], int]:
        """(group, topic, partition) -> lag, from the broker."""
        try:
            admin, offsets = await self._clients()
            tps = [
                TopicPartition(topic, p)
                for topic in sorted({t for topics in self.groups.values() for t in topics})
                for p in sorted(offsets.partitions_for_topic(topic) or ())
            ]
            if not tps:
                await offsets.topics()  # refresh the metadata: the topics may be created later
                return {}
            ends = await offsets.end_offsets(tps)
            starts = await offsets.beginning_offsets(tps)
            out: dict[tuple[str, str, int], int] = {}
            for group, topics in self.groups.items():
                committed = await admin.list_consumer_group_offsets(
                    group, partitions=[tp for tp in tps if tp.topic in topics]
                )
                for tp in tps:
                    if tp.topic in topics:
                        at = committed.get(tp)
                        out[(group, tp.topic, tp.partition)] = lag_of(
                            ends.get(tp, 0), at.offset if at is not None else None, starts.get(tp, 0)
                        )
            return out
        except BaseException:
            await self.close()  # a broker that lost its log or moved: connect afresh next round
            raise

    async def refresh(self) -> None:
        for (group, topic, partition), lag in (await self.measure()).items():
            metrics.CONSUMER_GROUP_LAG.labels(group, topic, str(partition)).set(lag)

    async def close(self) -> None:
        admin, offsets, self._admin, self._offsets = self._admin, self._offsets, None, None
        await self._close(admin, offsets)

    @staticmethod
    async def _close(admin: AIOKafkaAdminClient | None, offsets: AIOKafkaConsumer | None) -> None:
        for client in (offsets, admin):
            if client is not None:
                try:
                    await client.close() if isinstance(client, AIOKafkaAdminClient) else await client.stop()
                except Exception as exc:
                    log.debug("closing a lag client failed", error=repr(exc))
