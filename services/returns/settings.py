"""returns service settings: environment variables with the prefix RETURNFLOW_RETURNS_."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from returnflow.settings import ServiceSettings


class ReturnsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RETURNFLOW_RETURNS_", extra="ignore")

    port: int = 8081

    # Intake group commit: webhooks accepted in one transaction (RETURNFLOW_RETURNS_INTAKE_BATCH_MAX, ...).
    intake_batch_max: int = 200
    intake_batch_wait_ms: float = 2.0
