"""Pure: what the notify service decided or was told about a message, as sms.* integration events. Every
sms.* event carries the same fields about its message (`sms_fields`); the number is always masked."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from contracts.events import SmsDeferred, SmsFailed, SmsSent, SmsSuppressed
from returnflow.logging import mask_phone
from services.notify.rules import Defer, Suppress

ERROR_CHARS = 500  # errors are quoted in events up to this length


@dataclass(frozen=True)
class SmsRef:
    """The message an event is about."""

    return_id: UUID
    correlation_id: str
    step: str
    phone: str
    locale: str


def sms_fields(ref: SmsRef, now: datetime) -> dict[str, Any]:
    """The fields every sms.* event carries (the number masked)."""
    return {
        "occurred_at": now,
        "return_id": ref.return_id,
        "correlation_id": ref.correlation_id,
        "step": ref.step,
        "phone_masked": mask_phone(ref.phone),
        "locale": ref.locale,
    }


def sent(ref: SmsRef, now: datetime, provider: str, provider_message_id: str) -> SmsSent:
    return SmsSent(**sms_fields(ref, now), provider=provider, provider_message_id=provider_message_id)


def failed(ref: SmsRef, now: datetime, provider: str, error: str) -> SmsFailed:
    return SmsFailed(**sms_fields(ref, now), provider=provider, error=error[:ERROR_CHARS])


def not_delivered(ref: SmsRef, now: datetime, provider: str, status: str, error: str | None) -> SmsFailed:
    """A delivery receipt saying the provider could not deliver a message it had accepted."""
    detail = f"not delivered: {status}" + (f" ({error})" if error and error != status else "")
    return SmsFailed(**sms_fields(ref, now), provider=provider, error=detail)


def held_back(ref: SmsRef, now: datetime, decision: Defer | Suppress) -> SmsDeferred | SmsSuppressed:
    """A message the rules did not let go now: deferred (until when, why) or suppressed (why)."""
    if isinstance(decision, Defer):
        return SmsDeferred(**sms_fields(ref, now), deliver_after=decision.until, reason=decision.reason)
    return SmsSuppressed(**sms_fields(ref, now), reason=decision.reason)
