"""Outside the local development stack a service refuses to start with a development secret, naming the
setting in one line; settings can come from mounted secret files."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from returnflow.settings import ServiceSettings, Settings, development_secrets, refuse_development_secrets


class ShopSettings(ServiceSettings):
    model_config = {"env_prefix": "RETURNFLOW_SHOP_", "extra": "ignore"}

    api_key: SecretStr = SecretStr("dev-shop-key")
    tokens: dict[str, SecretStr] = {}


def production(**over: object) -> Settings:
    secrets = {"generic": [SecretStr("a-real-secret")], "carriers": [SecretStr("another-one")]}
    return Settings(
        database_url=SecretStr("postgresql://db/rf"),
        kafka_bootstrap="kafka:9092",
        **{"webhook_secrets": secrets, **over},
    )


def test_every_development_secret_is_named_by_its_variable() -> None:
    assert development_secrets(Settings()) == [
        "RETURNFLOW_WEBHOOK_SECRETS (generic.0)",
        "RETURNFLOW_WEBHOOK_SECRETS (shopify.0)",
        "RETURNFLOW_WEBHOOK_SECRETS (carriers.0)",
        "RETURNFLOW_WEBHOOK_SECRETS (sms.0)",
    ]
    shop = ShopSettings(tokens={"ana": SecretStr("dev-ana"), "bo": SecretStr("real")})
    assert development_secrets(shop) == ["RETURNFLOW_SHOP_API_KEY", "RETURNFLOW_SHOP_TOKENS (ana)"]


def test_a_service_outside_the_dev_stack_refuses_development_secrets_in_one_line() -> None:
    with pytest.raises(SystemExit) as refused:
        refuse_development_secrets(production(), ShopSettings())
    message = str(refused.value)
    assert "\n" not in message and "RETURNFLOW_SHOP_API_KEY" in message and "RETURNFLOW_WEBHOOK" not in message
    refuse_development_secrets(production(), ShopSettings(api_key=SecretStr("k-live-123")))  # starts
    refuse_development_secrets(Settings(dev_stack=True), ShopSettings())  # the local stack: allowed


def test_settings_come_from_mounted_secret_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "returnflow_shop_api_key").write_text("k-from-a-file")
    monkeypatch.setenv("RETURNFLOW_SECRETS_DIR", str(tmp_path))
    assert ShopSettings.load().api_key.get_secret_value() == "k-from-a-file"


def test_returnflow_config_prints_every_setting_with_secrets_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    from apphost.cli import config_lines

    monkeypatch.setenv("RETURNFLOW_DATABASE_URL", "postgresql://rf:hunter2-db@db/rf")
    monkeypatch.setenv("RETURNFLOW_WEBHOOK_SECRETS", '{"generic": ["hunter2-hook"]}')
    text = "\n".join(config_lines())
    assert "hunter2" not in text
    assert "RETURNFLOW_DATABASE_URL=**********" in text
    assert 'RETURNFLOW_WEBHOOK_SECRETS={"generic": ["**********"]}' in text
    assert "# refunds" in text and "RETURNFLOW_REFUNDS_PORT=8083" in text
    monkeypatch.delenv("RETURNFLOW_WEBHOOK_SECRETS")
    assert "RETURNFLOW_WEBHOOK_SECRETS=" in (line := next(x for x in config_lines() if "WEBHOOK_SECRETS" in x))
    assert line.endswith("# development secret")
