"""The bodies the refunds service answers (its OpenAPI response models)."""

from __future__ import annotations

from datetime import date, datetime
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
    escalation_id: str | None = Field(default=None, description="the escalation an approve / reject decided")


class WhoAmI(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"example": {"actor_id": "agent-amy", "role": "agent", "limits": {"*": 2000}}}
    )
    actor_id: str
    role: str
    limits: dict[str, int | None] = Field(
        default_factory=dict, description="cumulative authority per return by currency (* any; null unlimited)"
    )


NEXT_CURSOR = "`cursor` of the next page (oldest first); null on the last page"


class EscalationItem(BaseModel):
    escalation_id: str
    return_id: UUID
    order_id: str
    shop_id: str
    amount: int = Field(description="minor units")
    currency: str
    basis: str
    required_role: str = Field(description="the lowest role that may decide it")
    reason: str
    raised_at: datetime
    raised_by: str | None = Field(description="the actor whose grant was above their authority; null: automatic")
    created_at: datetime = Field(description="= raised_at (the name the list always had)")
    requested_by: str | None = Field(description="= raised_by (the name the list always had)")


class EscalationCounts(BaseModel):
    total: int = Field(description="open escalations matching the filter (every page)")
    by_required_role: dict[str, int]


class Escalations(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {"escalations": [], "next_cursor": None, "counts": {"total": 0, "by_required_role": {}}}
        }
    )
    escalations: list[EscalationItem]
    next_cursor: str | None = Field(description=NEXT_CURSOR)
    counts: EscalationCounts


class FailureItem(BaseModel):
    refund_id: str
    return_id: UUID
    order_id: str
    shop_id: str
    amount: int = Field(description="minor units")
    currency: str
    basis: str
    actor_id: str | None = Field(description="who decided the refund (null: automatic)")
    error: str | None = Field(description="the gateway's last answer")
    attempts: int
    failed_at: datetime | None


class FailureCounts(BaseModel):
    total: int


class Failures(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"example": {"failures": [], "next_cursor": None, "counts": {"total": 0}}}
    )
    failures: list[FailureItem] = Field(description="refunds the gateway declined for good, no person resolved yet")
    next_cursor: str | None = Field(description=NEXT_CURSOR)
    counts: FailureCounts


class FailureResolved(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "return_id": RETURN_ID,
                "result": "resolved",
                "message": "declined refund resolved: retry",
                "refund_id": "5d0c1c5e-0d43-5b8f-9a55-0d6c1b7e9f31",
                "action": "retry",
                "note": "customer updated their card",
                "resolved_by": "sup-sam",
                "resolved_role": "supervisor",
                "retry_refund_id": "9a1f0c3e-7b1d-5e6f-8a55-0d6c1b7e9f31",
                "resolved_at": "2026-12-02T10:00:00Z",
            }
        }
    )
    return_id: UUID
    result: Literal["resolved", "already_resolved"]
    message: str
    refund_id: str
    action: Literal["retry", "settled_offline", "close"]
    note: str | None
    resolved_by: str
    resolved_role: str
    retry_refund_id: str | None = Field(description="the new ledger entry paid again (retry)")
    resolved_at: datetime


class ClawbackItem(BaseModel):
    clawback_id: str
    return_id: UUID
    order_id: str
    shop_id: str
    customer_key: str
    amount: int = Field(description="minor units")
    currency: str
    receipt_id: str
    refund_id: str | None
    reason: str
    status: Literal["open", "resolved"]
    flagged_at: datetime
    resolution: Literal["waived", "recovered_off_platform", "written_off"] | None
    resolution_note: str | None
    resolved_by: str | None
    resolved_role: str | None
    resolved_at: datetime | None


class ClawbackCounts(BaseModel):
    open: int
    resolved: int


class Clawbacks(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"example": {"clawbacks": [], "next_cursor": None, "counts": {"open": 0, "resolved": 0}}}
    )
    clawbacks: list[ClawbackItem]
    next_cursor: str | None = Field(description=NEXT_CURSOR)
    counts: ClawbackCounts


class ClawbackResolved(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "result": "resolved",
                "message": "clawback resolved: waived",
                "clawback_id": "3c1f0c3e-7b1d-5e6f-8a55-0d6c1b7e9f31",
                "return_id": RETURN_ID,
                "amount": 2000,
                "currency": "CNY",
                "resolution": "waived",
                "note": "long-standing customer",
                "resolved_by": "sup-sam",
                "resolved_role": "supervisor",
                "resolved_at": "2026-12-02T10:00:00Z",
            }
        }
    )
    result: Literal["resolved", "already_resolved"]
    message: str
    clawback_id: str
    return_id: UUID
    amount: int = Field(description="minor units")
    currency: str
    resolution: Literal["waived", "recovered_off_platform", "written_off"]
    note: str | None
    resolved_by: str
    resolved_role: str
    resolved_at: datetime


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
    failure_resolutions: list[dict[str, Any]] = Field(
        default_factory=list,
        description="what people decided about its declined refunds (retry, settled offline, close)",
    )


class TeamNumbers(BaseModel):
    """One person's (or the team's) numbers over a day or the range."""

    decisions: int = Field(description="approvals, rejections and grants that took effect")
    escalations_raised: int = Field(description="grants above their authority, sent up")
    escalations_resolved: int = Field(description="escalations they approved or rejected")
    decision_median_s: float | None = Field(description="median seconds from escalation raised to decided")
    decision_p90_s: float | None = Field(description="90th percentile of the same")
    free_refunds: int = Field(description="refunds granted on their authority (not declined by the gateway)")
    free_refund_amounts: dict[str, int] = Field(description="their amount per currency, minor units")
    authority_share_bp: int | None = Field(
        description="share of their cumulative authority per return used, averaged over the returns granted "
        "on, in basis points (10000 = all); null: no limited authority used"
    )
    clawbacks: int = Field(description="clawbacks flagged on refunds they decided")


class TeamDay(TeamNumbers):
    actor_id: str
    day: date


class TeamPerson(TeamNumbers):
    actor_id: str


class TeamQueue(BaseModel):
    open_escalations: int
    oldest_s: float | None = Field(description="seconds the oldest open escalation has waited")
    median_age_s: float | None
    p90_age_s: float | None


class Team(BaseModel):
    """The team's numbers: per person and day, per person over the range, the team, and its queue now."""

    model_config = ConfigDict(
        populate_by_name=True,
        json_schema_extra={
            "example": {
                "from": "2026-12-01",
                "to": "2026-12-02",
                "tz": "Asia/Shanghai",
                "shop": None,
                "days": [],
                "people": [],
                "team": {
                    "decisions": 0,
                    "escalations_raised": 0,
                    "escalations_resolved": 0,
                    "decision_median_s": None,
                    "decision_p90_s": None,
                    "free_refunds": 0,
                    "free_refund_amounts": {},
                    "authority_share_bp": None,
                    "clawbacks": 0,
                },
                "queue": {"open_escalations": 0, "oldest_s": None, "median_age_s": None, "p90_age_s": None},
            }
        },
    )
    from_: date = Field(alias="from")
    to: date
    tz: str = Field(description="the time zone the days are counted in")
    shop: str | None
    days: list[TeamDay] = Field(description="per (person, day) with any number, oldest day first")
    people: list[TeamPerson] = Field(description="per person over the whole range")
    team: TeamNumbers
    queue: TeamQueue = Field(description="open escalations now")
