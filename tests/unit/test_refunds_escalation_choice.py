"""Which open escalation an approve / reject decides (issue 15: a supervisor could not approve an agent's
30.00 because an older automatic 100.00 needing a manager came first) — `rules.choose_escalation`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.events import RefundBasis, ReturnKind, Role
from services.refunds.rules import (
    ROLE_ORDER,
    Actor,
    Command,
    Line,
    OpenEscalation,
    Outcome,
    Policy,
    RefundNow,
    ReturnFacts,
    authority_from,
    choose_escalation,
    decide_command,
    may_decide,
)

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
TIERED = Policy(authority=authority_from("tiered"))


def facts(*escalations: OpenEscalation, paid_total: int = 50_000) -> ReturnFacts:
    return ReturnFacts(
        return_id=uuid.uuid4(),
        kind=ReturnKind.exchange,
        currency="CNY",
        paid_total=paid_total,
        lines=(Line("A", 1, paid_total),),
        requested_at=T0,
        escalations=escalations,
    )


def esc(eid: str, amount: int, role: Role, by: str | None = None) -> OpenEscalation:
    return OpenEscalation(eid, f"cause-{eid}", amount, RefundBasis.agent_authority, role, by)


AUTOMATIC_100 = esc("auto-100", 10_000, Role.manager)
AGENTS_30 = esc("amy-30", 3_000, Role.supervisor, "agent-amy")
SAM = Actor("sup-sam", Role.supervisor)


def test_the_issue_a_supervisor_approves_the_agents_30_while_an_older_100_waits_for_a_manager():
    f = facts(AUTOMATIC_100, AGENTS_30)
    o = decide_command(f, TIERED, SAM, Command("c1", "approve"))
    assert (o.status, o.result, o.amount, o.escalation_id) == (200, "refunded", 3_000, "amy-30")
    assert isinstance(o.actions[0], RefundNow) and o.actions[0].escalation_id == "amy-30"
    assert decide_command(f, TIERED, SAM, Command("c2", "reject")).escalation_id == "amy-30"


def test_a_named_escalation_is_decided_or_refused_naming_it():
    f = facts(AUTOMATIC_100, AGENTS_30)
    o = decide_command(f, TIERED, SAM, Command("c1", "approve", escalation_id="auto-100"))
    assert (o.status, o.field) == (403, "escalation_id") and "waits for a manager" in o.message
    o = decide_command(f, TIERED, SAM, Command("c2", "approve", escalation_id="gone"))
    assert (o.status, o.field) == (409, "escalation_id")
    o = decide_command(f, TIERED, Actor("mgr-mia", Role.manager), Command("c3", "reject", escalation_id="auto-100"))
    assert (o.status, o.result, o.escalation_id) == (200, "rejected", "auto-100")


def test_when_nothing_is_within_authority_the_oldest_answers_who_it_waits_for_as_before():
    f = facts(AUTOMATIC_100, AGENTS_30)
    amy = Actor("agent-amy", Role.agent)
    o = decide_command(f, TIERED, amy, Command("c1", "approve"))
    assert (o.status, o.result, o.required_role, o.escalation_id) == (202, "escalated", Role.manager, "auto-100")
    assert decide_command(f, TIERED, amy, Command("c2", "reject")).status == 403
    assert decide_command(facts(), TIERED, amy, Command("c3", "approve")).status == 409


roles = st.sampled_from(ROLE_ORDER)
escalation_st = st.builds(esc, st.uuids().map(str), st.integers(1, 20_000), roles, st.none() | st.just("agent-amy"))


@settings(max_examples=300, deadline=None)
@given(
    escs=st.lists(escalation_st, max_size=5, unique_by=lambda e: e.escalation_id),
    role=roles,
    action=st.sampled_from(["approve", "reject"]),
    amount=st.none() | st.integers(1, 20_000),
    named=st.none() | st.integers(0, 5),
)
def test_the_choice_is_the_named_one_or_the_oldest_within_authority(escs, role, action, amount, named):
    f = facts(*escs, paid_total=30_000)
    actor = Actor("someone", role)
    wanted = escs[named].escalation_id if named is not None and named < len(escs) else None
    if named is not None and wanted is None:
        wanted = "not-open"
    cmd = Command("c", action, amount, escalation_id=wanted)
    chosen = choose_escalation(f, TIERED, actor, cmd)
    if wanted is not None:
        target = next((e for e in escs if e.escalation_id == wanted), None)
        if target is None:
            assert isinstance(chosen, Outcome) and (chosen.status, chosen.field) == (409, "escalation_id")
        elif ROLE_ORDER.index(role) < ROLE_ORDER.index(target.required_role):
            assert isinstance(chosen, Outcome) and (chosen.status, chosen.field) == (403, "escalation_id")
        else:
            assert chosen == target  # never another one than the one named
        return
    if not escs:
        assert isinstance(chosen, Outcome) and chosen.status == 409
        return
    assert isinstance(chosen, OpenEscalation)
    covered = [e for e in escs if may_decide(f, TIERED, actor, cmd, e)]
    # the oldest the actor may decide; only when none is, the oldest of all
    assert chosen == (covered[0] if covered else escs[0])
    before = escs[: escs.index(chosen)]
    assert not any(may_decide(f, TIERED, actor, cmd, e) for e in before)
