"""Development fixtures of the refunds service, used only by the platform app (`returnflow up`, the demo,
tests): the simulated payment gateway (`gateway_sim`), its test API key, and a roster of five people
whose bearer tokens are public. A deployment seeds its own roster from a file and sets its own key."""

from __future__ import annotations

from contracts.events import Role
from services.refunds.repository import RosterEntry

# `returnflow roster seed` with no file (as `make run` does).
DEV_ROSTER: tuple[RosterEntry, ...] = (
    RosterEntry(actor_id="agent-amy", role=Role.agent, name="Amy (agent)", token="dev-token-agent-amy"),
    RosterEntry(actor_id="agent-bo", role=Role.agent, name="Bo (agent)", token="dev-token-agent-bo"),
    RosterEntry(actor_id="sup-sam", role=Role.supervisor, name="Sam (supervisor)", token="dev-token-sup-sam"),
    RosterEntry(actor_id="mgr-mia", role=Role.manager, name="Mia (manager)", token="dev-token-mgr-mia"),
    RosterEntry(actor_id="owner-oz", role=Role.owner, name="Oz (owner)", token="dev-token-owner-oz"),
)

DEV_GATEWAY_API_KEY = "dev-gateway-api-key"  # development secrets start with `dev-`

# Read by the refunds service and by the simulated gateway `returnflow up` starts beside it.
ENV: dict[str, str] = {"RETURNFLOW_REFUNDS_GATEWAY_API_KEY": DEV_GATEWAY_API_KEY}
