"""Which consumer groups gather records before the broker answers their fetch (ServiceSettings.fetch_options)."""

from __future__ import annotations

import pytest

from returnflow.settings import ServiceSettings, Settings
from services.audit.settings import AuditSettings
from services.notify.settings import NotifySettings
from services.refunds.settings import RefundsSettings
from services.returns.settings import ReturnsSettings
from services.warehouse.settings import WarehouseSettings


def runtime(wait_ms: int = 100) -> Settings:
    return Settings(kafka_fetch_max_wait_ms=wait_ms)


def test_a_service_answers_at_the_first_record_within_the_runtime_wait_by_default() -> None:
    assert ServiceSettings().fetch_options(runtime(123)) == {"fetch_min_bytes": 1, "fetch_max_wait_ms": 123}


@pytest.mark.parametrize(
    "settings", [RefundsSettings, WarehouseSettings, ReturnsSettings, NotifySettings, AuditSettings]
)
def test_no_service_gathers_unless_told(settings: type[ServiceSettings]) -> None:
    # gathering is measured (docs/performance.md) but off by default: tests that read one topic's effect right after
    # another's raced with it (three seen in three clean-clone runs)
    assert settings().fetch_options(runtime(100)) == {"fetch_min_bytes": 1, "fetch_max_wait_ms": 100}


def test_an_operator_can_turn_gathering_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETURNFLOW_NOTIFY_CONSUMER_FETCH_MIN_BYTES", "65536")
    monkeypatch.setenv("RETURNFLOW_NOTIFY_CONSUMER_FETCH_MAX_WAIT_MS", "300")
    assert NotifySettings().fetch_options(runtime(100)) == {"fetch_min_bytes": 65536, "fetch_max_wait_ms": 300}
