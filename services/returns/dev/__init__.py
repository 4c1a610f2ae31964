"""Development fixtures of the returns service, used only by the platform app (`returnflow up`, tests):
the secret that signs customer links (notify builds them into texts, returns finds a return by them).
A deployment sets its own RETURNFLOW_CUSTOMER_LINK_SECRET for both."""

from __future__ import annotations

CUSTOMER_LINK_SECRET = "dev-customer-link-secret"

ENV: dict[str, str] = {"RETURNFLOW_CUSTOMER_LINK_SECRET": CUSTOMER_LINK_SECRET}
