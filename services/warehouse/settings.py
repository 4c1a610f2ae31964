"""warehouse service settings: environment variables with the prefix RETURNFLOW_WAREHOUSE_."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from returnflow.settings import ServiceSettings


class WarehouseDevice(BaseModel):
    """A registered warehouse scanner: the warehouse it belongs to and its bearer token."""

    warehouse_id: str
    token: SecretStr


class WarehouseSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RETURNFLOW_WAREHOUSE_", extra="ignore")

    port: int = 8082

    # Warehouse (warehouse-confirm): devices allowed to post receipts (JSON: id -> {warehouse_id, token}),
    # and the group commit of carrier scans and receipts.
    devices: dict[str, WarehouseDevice] = Field(default_factory=dict)
    # Warehouse staff, each with a personal token (JSON: person id -> {warehouse_id, token}): they post
    # receipts as a device does (the workbench's receiving screen), and the receipt records the person.
    staff: dict[str, WarehouseDevice] = Field(default_factory=dict)
    batch_max: int = 200
    batch_wait_ms: float = 2.0
