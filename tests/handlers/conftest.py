"""Fixtures of the handler tier: a fresh database on the session's PostgreSQL, no broker."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from returnflow.settings import Settings


@pytest.fixture
def handler_settings(dsn: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=SecretStr(dsn),
        kafka_bootstrap=None,
        data_dir=tmp_path / "data",
        webhook_secrets={
            "generic": [SecretStr("test-secret-old"), SecretStr("test-secret-new")],
            "shopify": [SecretStr("shopify-secret")],
            "carriers": [SecretStr("carrier-secret")],
            "sms": [SecretStr("sms-secret")],
        },
        consumer_backoff_base_s=0.01,
        consumer_backoff_max_s=0.05,
        log_format="console",
    )
