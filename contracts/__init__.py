"""returnflow contracts: the only code services share besides the runtime plumbing."""

from contracts.catalog import CATALOG, TOPICS_BY_NAME, Topic, dlq_topic, topic_for_type
from contracts.events import EVENT_TYPES, Event

__all__ = ["CATALOG", "EVENT_TYPES", "TOPICS_BY_NAME", "Event", "Topic", "dlq_topic", "topic_for_type"]
