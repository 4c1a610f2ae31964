"""The bodies the refunds service answers (its OpenAPI response models)."""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

RETURN_ID = "0b9e7f3c-59a4-4a0e-9a52-3f1f6f0c2d11"


class DecisionOutcome(BaseModel):
    """What a decision did: took effect (200) or waits for a person of `required_role` (202). A refusal
    is problem details carrying `result: refused` and the same members."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "return_id": RETURN_ID,
                "actor_id": "agent-amy",
                "role": "agent",
                "result": "refunded",
                "message": "refund of 1500 issued",
                "amount": 1500,
            }
        }
    )
    return_id: UUID
    actor_id: str
    role: str
    limits: dict[str, int | None] = {}
    result: Literal["refunded", "rejected", "escalated"] | str
    message: str
    amount: int | None = Field(default=None, description="minor units")
    required_role: str | None = Field(default=None, description="who may decide it (an escalation)")


class WhoAmI(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"example": {"actor_id": "agent-amy", "role": "agent", "limits": {"*": 2000}}}
    )
    actor_id: str
    role: str
    limits: dict[str, int | None] = Field(
        default_factory=dict, description="cumulative authority per return by currency (* any; null unlimited)"
    )


class Escalations(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {"escalations": []}})
    escalations: list[dict[str, Any]] = Field(
        description="escalation_id, return_id, amount, currency, basis, required_role, requested_by, reason, created_at"
    )


class Clawbacks(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {"clawbacks": []}})
    clawbacks: list[dict[str, Any]] = Field(
        description="clawback_id, return_id, customer_key, amount, currency, receipt_id, refund_id, reason, status, "
        "flagged_at"
    )


class Ledger(BaseModel):
    """A return's money: paid and reserved, its refunds, escalations, decisions, clawbacks and commands."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "return_id": RETURN_ID,
                "kind": "return_and_refund",
                "currency": "CNY",
                "paid_total": 5000,
                "reserved": 1500,
                "refunds": [],
                "escalations": [],
                "decisions": [],
                "clawbacks": [],
                "commands": [],
            }
        }
    )
    return_id: UUID
    kind: str
    currency: str
    paid_total: int = Field(description="minor units")
    reserved: int = Field(description="minor units refunded or on their way")
    refunds: list[dict[str, Any]]
    escalations: list[dict[str, Any]]
    decisions: list[dict[str, Any]]
    clawbacks: list[dict[str, Any]]
    commands: list[dict[str, Any]]
