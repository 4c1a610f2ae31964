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


@pytest.mark.parametrize("settings", [RefundsSettings, WarehouseSettings])
def test_the_money_path_does_not_wait_to_gather(settings: type[ServiceSettings]) -> None:
    # refunds decides early refunds; warehouse matches the scans that start them
    assert settings().fetch_options(runtime(100)) == {"fetch_min_bytes": 1, "fetch_max_wait_ms": 100}


@pytest.mark.parametrize("settings", [ReturnsSettings, NotifySettings, AuditSettings])
def test_the_timeline_sms_and_audit_consumers_gather_for_at_most_a_third_of_a_second(
    settings: type[ServiceSettings],
) -> None:
    options = settings().fetch_options(runtime(100))
    assert options["fetch_min_bytes"] >= 16 * 1024
    assert 100 < options["fetch_max_wait_ms"] <= 300


def test_an_operator_can_turn_gathering_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETURNFLOW_NOTIFY_CONSUMER_FETCH_MIN_BYTES", "1")
    monkeypatch.setenv("RETURNFLOW_NOTIFY_CONSUMER_FETCH_MAX_WAIT_MS", "50")
    assert NotifySettings().fetch_options(runtime(100)) == {"fetch_min_bytes": 1, "fetch_max_wait_ms": 50}


@pytest.mark.parametrize("settings", [RefundsSettings, WarehouseSettings, ReturnsSettings])
def test_the_relays_of_the_money_path_and_of_intake_publish_at_once(settings: type[ServiceSettings]) -> None:
    # warehouse's parcels.scanned starts an early refund; refunds' refund.issued ends it; returns' return.requested
    # starts everything
    assert settings().relay_gather_ms == 0


@pytest.mark.parametrize("settings", [NotifySettings, AuditSettings])
def test_the_sms_and_audit_relays_gather_for_a_tenth_of_a_second(settings: type[ServiceSettings]) -> None:
    assert 0 < settings().relay_gather_ms <= 100
