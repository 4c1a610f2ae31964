"""Pure pieces of the refunds service besides the policy (services/refunds/policy.py): request
bodies, the policy built from settings, roster entries and the retry schedule. No I/O."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from contracts.events import Role
from returnflow.settings import Settings
from services.refunds.policy import Policy, authority_from


class DecisionBody(BaseModel):
    """Body of POST /v1/refunds/{return_id}/decisions. The actor comes from the bearer token."""

    model_config = ConfigDict(extra="forbid")
    action: Literal["approve", "reject", "grant_free_refund"]
    amount: StrictInt | None = Field(
        default=None, ge=1, description="minor units; required for grant_free_refund, optional for approve"
    )
    note: str | None = Field(default=None, max_length=2000)


def policy_from(settings: Settings) -> Policy:
    return Policy(
        authority=authority_from(settings.refunds_authority_preset, settings.refunds_authority_limits),
        early_refund=settings.refunds_early_refund,
        early_refund_cap=dict(settings.refunds_early_refund_cap),
        early_refund_max_clawbacks=settings.refunds_early_refund_max_clawbacks,
        return_window=timedelta(days=settings.refunds_return_window_days)
        if settings.refunds_return_window_days is not None
        else None,
    )


class RosterEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    actor_id: str = Field(min_length=1, max_length=128)
    role: Role
    name: str | None = None
    token: str | None = Field(default=None, min_length=16, description="bearer token for the decisions API")
    active: bool = True


# Development-only roster for `make run` (`returnflow roster seed` with no file). Production seeds
# its own from a JSON file of RosterEntry objects.
DEV_ROSTER: tuple[RosterEntry, ...] = (
    RosterEntry(actor_id="agent-amy", role=Role.agent, name="Amy (agent)", token="dev-token-agent-amy"),
    RosterEntry(actor_id="agent-bo", role=Role.agent, name="Bo (agent)", token="dev-token-agent-bo"),
    RosterEntry(actor_id="sup-sam", role=Role.supervisor, name="Sam (supervisor)", token="dev-token-sup-sam"),
    RosterEntry(actor_id="mgr-mia", role=Role.manager, name="Mia (manager)", token="dev-token-mgr-mia"),
    RosterEntry(actor_id="owner-oz", role=Role.owner, name="Oz (owner)", token="dev-token-owner-oz"),
)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def bearer(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def retry_delay_s(attempts: int, base_s: float, max_s: float) -> float:
    """Wait before the next attempt series of a refund whose outcome is still unknown."""
    return float(min(max_s, base_s * 2 ** max(0, attempts - 1)))


def outcome_body(o: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"result": o.result, "message": o.message}
    if o.amount is not None:
        body["amount"] = o.amount
    if o.required_role is not None:
        body["required_role"] = o.required_role.value if hasattr(o.required_role, "value") else o.required_role
    if o.field:
        body["fields"] = [{"field": o.field, "message": o.message}]
    return body
