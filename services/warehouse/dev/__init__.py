"""Development fixtures of the warehouse service, used only by the platform app (`returnflow up`, the
demo, tests): a scanner device whose token is public, and the courier feeds' development secrets. A
deployment registers its own devices and sets its own feed secrets (a `dev-` one is refused there)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import SecretStr

from services.warehouse.settings import WarehouseDevice, WarehouseSettings

DEV_DEVICES: dict[str, dict[str, str]] = {
    "dock-1": {"warehouse_id": "WH-DEMO", "token": "dev-device-token-dock-1"},
}
DEVICE_TOKEN = DEV_DEVICES["dock-1"]["token"]

KUAIDI100_SALT = "dev-kuaidi100-salt"
AFTERSHIP_SECRET = "dev-aftership-secret"

# A warehouse clerk with a personal token (RETURNFLOW_WAREHOUSE_STAFF): signs in to the workbench's
# receiving screen; their receipts record them.
DEV_STAFF: dict[str, dict[str, str]] = {"wh-zhao": {"warehouse_id": "WH-DEMO", "token": "dev-staff-token-zhao"}}

ENV: dict[str, str] = {
    "RETURNFLOW_WAREHOUSE_DEVICES": json.dumps(DEV_DEVICES),
    "RETURNFLOW_WAREHOUSE_STAFF": json.dumps(DEV_STAFF),
    "RETURNFLOW_WAREHOUSE_KUAIDI100_SALTS": json.dumps([KUAIDI100_SALT]),
    "RETURNFLOW_WAREHOUSE_AFTERSHIP_WEBHOOK_SECRETS": json.dumps([AFTERSHIP_SECRET]),
}


def dev_settings(**over: Any) -> WarehouseSettings:
    """WarehouseSettings with the development device registered and the courier feeds on (for tests and
    the demo)."""
    devices = {
        device_id: WarehouseDevice(warehouse_id=d["warehouse_id"], token=SecretStr(d["token"]))
        for device_id, d in DEV_DEVICES.items()
    }
    feeds = {
        "kuaidi100_salts": [SecretStr(KUAIDI100_SALT)],
        "aftership_webhook_secrets": [SecretStr(AFTERSHIP_SECRET)],
    }
    return WarehouseSettings(**{"devices": devices, **feeds, **over})


# Read tokens (RETURNFLOW_READ_TOKENS on `returnflow up`): the device reads as the warehouse.
READERS: dict[str, dict[str, str]] = {d: {"token": v["token"], "role": "warehouse"} for d, v in DEV_DEVICES.items()}
