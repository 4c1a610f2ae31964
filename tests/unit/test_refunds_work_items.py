"""Closing a declined refund or a clawback (issue 15) — `rules.resolve_failure`, `rules.resolve_clawback`:
only a supervisor or above, once, a repeat harmless, another way a conflict, never a retry above what
remains refundable."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.events import Role
from services.refunds.rules import (
    CLAWBACK_RESOLUTIONS,
    FAILURE_ACTIONS,
    ROLE_ORDER,
    Actor,
    resolve_clawback,
    resolve_failure,
)

actors = st.builds(Actor, st.just("someone"), st.sampled_from(ROLE_ORDER))
below_supervisor = {Role.agent}


@settings(max_examples=300, deadline=None)
@given(
    actor=actors,
    amount=st.none() | st.integers(1, 20_000),
    done=st.none() | st.sampled_from(FAILURE_ACTIONS),
    action=st.sampled_from(FAILURE_ACTIONS),
    headroom=st.integers(0, 20_000),
    named=st.none() | st.just("r-1"),
)
def test_a_declined_refund_is_resolved_once_by_a_supervisor_never_paid_beyond_the_headroom(
    actor, amount, done, action, headroom, named
):
    o = resolve_failure(actor, amount, done, action, headroom, named)
    if actor.role in below_supervisor:
        assert o.status == 403 and not o.takes_effect
        return
    if amount is None:
        assert o.status == 409 and o.field == ("refund_id" if named else None)
    elif done is not None:
        assert (o.status, o.result) == ((200, "already_resolved") if done == action else (409, "refused"))
        assert not o.takes_effect
    elif action == "retry" and amount > headroom:
        assert (o.status, o.field) == (409, "action") and not o.takes_effect
    else:
        assert (o.status, o.result) == (200, "resolved") and o.takes_effect


@settings(max_examples=200, deadline=None)
@given(
    actor=actors,
    exists=st.booleans(),
    done=st.none() | st.sampled_from(CLAWBACK_RESOLUTIONS),
    resolution=st.sampled_from(CLAWBACK_RESOLUTIONS),
)
def test_a_clawback_is_closed_once_by_a_supervisor_and_a_repeat_is_harmless(actor, exists, done, resolution):
    o = resolve_clawback(actor, exists, done if exists else None, resolution)
    if actor.role in below_supervisor:
        assert o.status == 403
    elif not exists:
        assert o.status == 404
    elif done is None:
        assert o.takes_effect and o.status == 200
    elif done == resolution:
        assert (o.status, o.result, o.takes_effect) == (200, "already_resolved", False)
    else:
        assert (o.status, o.field, o.takes_effect) == (409, "resolution", False)
