"""Development fixtures of the warehouse service, used only by the platform app (`returnflow up`, the
demo, tests): a scanner device whose token is public. A deployment registers its own devices."""

from __future__ import annotations

import json

DEV_DEVICES: dict[str, dict[str, str]] = {
    "dock-1": {"warehouse_id": "WH-DEMO", "token": "dev-device-token-dock-1"},
}

ENV: dict[str, str] = {"RETURNFLOW_WAREHOUSE_DEVICES": json.dumps(DEV_DEVICES)}
