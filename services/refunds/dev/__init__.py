"""Development fixtures of the refunds service, used only by the platform app (`returnflow up`, the demo,
tests): the simulated payment gateway (`gateway_sim`)."""

from __future__ import annotations

ENV: dict[str, str] = {}
