"""Development fixtures of the workbench, used only by the platform app (`returnflow up`, the demo, tests):
the ops read token of the local stack and a development session key. A deployment sets its own."""

from __future__ import annotations

# The development ops read token (apphost.registry.DEV_OPS_TOKEN, in RETURNFLOW_READ_TOKENS on `returnflow up`).
ENV: dict[str, str] = {
    "RETURNFLOW_WORKBENCH_READ_TOKEN": "dev-read-token-ops",
    "RETURNFLOW_WORKBENCH_SESSION_KEY": "dev-workbench-session-key",
}
