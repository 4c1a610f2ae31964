"""The bodies the audit service answers (its OpenAPI response models)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

RETURN_ID = "0b9e7f3c-59a4-4a0e-9a52-3f1f6f0c2d11"


def example(value: dict[str, Any], extra: str = "forbid") -> ConfigDict:
    return ConfigDict(extra=extra, json_schema_extra={"example": value})  # type: ignore[typeddict-item]


class AuditWhoAmI(BaseModel):
    """The returns-team person a bearer token belongs to."""

    model_config = ConfigDict(json_schema_extra={"example": {"person_id": "rt-lin", "role": "returns_team"}})
    person_id: str
    role: str


class CheckRecorded(BaseModel):
    """A returns-team check: recorded (201) or the same check again (200)."""

    model_config = example(
        {
            "check_id": "chk-1",
            "side": "returns_team:chk-1",
            "return_id": RETURN_ID,
            "sku": "SKU-1",
            "movement": "restock",
            "quantity": 1,
            "checked_by": "rt-lin",
            "checked_at": "2026-11-22T09:30:00+08:00",
            "status": "pending",
            "discrepancy_id": None,
            "reason": None,
            "paired_with": None,
            "log_seq": 12,
            "duplicate": False,
        }
    )
    check_id: str
    side: str
    return_id: UUID
    sku: str
    movement: str
    quantity: int
    checked_by: str
    checked_at: datetime
    status: str = Field(description="pending, verified or a discrepancy")
    discrepancy_id: str | None
    reason: str | None
    paired_with: str | None
    log_seq: int | None
    duplicate: bool


class Discrepancy(BaseModel):
    model_config = example(
        {
            "id": "d-1",
            "reason": "quantity_mismatch",
            "return_id": RETURN_ID,
            "sku": "SKU-1",
            "movement": "restock",
            "details": "warehouse 1, returns team 2",
            "status": "open",
            "opened_at": "2026-11-22T09:30:00+08:00",
            "log_seq": 13,
        },
        extra="allow",
    )
    id: str
    reason: str
    return_id: UUID
    sku: str
    movement: str | None
    details: str
    status: str
    opened_at: datetime
    log_seq: int
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    resolution_note: str | None = None
    sides: list[Any] = Field(default_factory=list, description="side keys (list), or the sides (detail)")


class Discrepancies(BaseModel):
    model_config = example({"discrepancies": [], "limit": 100, "offset": 0})
    discrepancies: list[Discrepancy]
    limit: int
    offset: int


class Resolved(Discrepancy):
    resolution_hash: str


class Reconciliation(BaseModel):
    model_config = example({"skus": []})
    skus: list[dict[str, Any]] = Field(
        description="per SKU: requested, received, attested and verified by movement, open/resolved discrepancies"
    )


class ReturnSides(BaseModel):
    model_config = example(
        {
            "return_id": RETURN_ID,
            "known": False,
            "kind": None,
            "refused_checks": [],
            "sides": [],
            "movements": [],
            "discrepancies": [],
        },
        extra="allow",
    )
    return_id: UUID
    known: bool
    kind: str | None
    refused_checks: list[dict[str, Any]]
    sides: list[dict[str, Any]]
    movements: list[dict[str, Any]]
    discrepancies: list[dict[str, Any]]


class LogEntry(BaseModel):
    seq: int
    prev_hash: str
    hash: str
    content: dict[str, Any]


class LogPage(BaseModel):
    model_config = example({"entries": []})
    entries: list[LogEntry]


class ChainHead(BaseModel):
    seq: int | None
    hash: str | None


class Verification(BaseModel):
    """The chain recomputed: intact (200). A break is a 409 problem carrying these members."""

    model_config = example(
        {"ok": True, "checked": 42, "head": {"seq": 42, "hash": "9f…"}, "first_bad_seq": None, "problem": None}
    )
    ok: bool
    checked: int
    head: ChainHead
    first_bad_seq: int | None
    problem: str | None
