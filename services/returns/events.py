"""Decisions of the returns service as the integration events it publishes (contracts models). Pure."""

from __future__ import annotations

import uuid
from datetime import datetime
from uuid import UUID

from contracts.events import Customer, RequestedBy, ReturnCancelled, ReturnLine, ReturnRequested, TrackingRegistered
from services.returns.rules import Cancel, Intake, RegisterTracking


def return_requested(return_id: UUID, it: Intake, now: datetime) -> ReturnRequested:
    # The body is already validated; build the event without validating every field again.
    b = it.body
    return ReturnRequested.model_construct(
        event_id=uuid.uuid4(),
        type="return.requested",
        version=1,
        occurred_at=now,
        return_id=return_id,
        correlation_id=it.correlation_id,
        shop_id=b.shop_id,
        shop_name=b.shop_name,
        platform=it.platform,
        platform_return_id=b.platform_return_id,
        order_id=b.order_id,
        kind=b.kind,
        customer=Customer.model_construct(**b.customer.model_dump()),
        currency=b.currency,
        paid_total=b.paid_total,
        lines=[ReturnLine.model_construct(**line.model_dump()) for line in b.lines],
        tracking_no=b.tracking_no,
        requested_by=RequestedBy.model_construct(**b.requested_by.model_dump()),
        requested_at=b.requested_at,
        payment_reference=b.payment_reference,
    )


def return_event(
    return_id: UUID, decision: RegisterTracking | Cancel, correlation_id: str, now: datetime
) -> TrackingRegistered | ReturnCancelled:
    """The event of a platform's tracking registration or the customer's cancellation."""
    if isinstance(decision, RegisterTracking):
        return TrackingRegistered(
            occurred_at=now,
            return_id=return_id,
            correlation_id=correlation_id,
            tracking_no=decision.tracking_no,
            carrier=decision.carrier,
        )
    return ReturnCancelled(
        occurred_at=now,
        return_id=return_id,
        correlation_id=correlation_id,
        reason=decision.reason,
        cancelled_by=decision.by,
    )
