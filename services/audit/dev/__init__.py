"""Development fixtures of the audit service, used only by the platform app (`returnflow up`, the demo,
tests): two returns-team people with public bearer tokens. A deployment sets its own."""

from __future__ import annotations

import json

DEV_TOKENS: dict[str, str] = {"rt-lin": "dev-audit-token-lin", "rt-ana": "dev-audit-token-ana"}

ENV: dict[str, str] = {"RETURNFLOW_AUDIT_TOKENS": json.dumps(DEV_TOKENS)}
