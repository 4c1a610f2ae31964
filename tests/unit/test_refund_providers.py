"""Pure parts of the refund providers: Stripe's answers mapped onto the ledger's outcomes (an answer that
may hide a payment is never `declined`, which would release the money), the documented request body,
and a provider's webhook outcomes matched to the ledger's pending refunds."""

from __future__ import annotations

import uuid
from urllib.parse import parse_qsl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.refunds.gateway import WebhookRefused
from services.refunds.providers.stripe import classify, refund_form, refund_outcome, webhook_outcomes
from services.refunds.rules import Due, WebhookOutcome, webhook_results

ERROR_TYPES = st.sampled_from(
    ["api_error", "card_error", "idempotency_error", "invalid_request_error", "rate_limit_error"]
)


@given(status=st.integers(500, 599), kind=ERROR_TYPES)
def test_a_5xx_is_never_final(status: int, kind: str) -> None:
    assert classify(status, {"error": {"type": kind, "message": "x"}}).outcome == "unknown"


@given(status=st.integers(400, 499), kind=ERROR_TYPES)
def test_only_a_refusal_that_made_nothing_is_final(status: int, kind: str) -> None:
    outcome = classify(status, {"error": {"type": kind, "message": "x"}}).outcome
    if status == 429 or status in (401, 403):
        assert outcome == "retryable"  # nothing made: asked again (after Retry-After, or a fixed key)
    elif status == 409 or kind == "idempotency_error":
        assert outcome == "unknown"  # an earlier request under this key may have paid
    elif kind == "api_error":
        assert outcome == "unknown"
    else:
        assert outcome == "declined"


@given(state=st.sampled_from(["succeeded", "pending", "requires_action", "failed", "canceled"]))
def test_a_refund_object_by_its_status(state: str) -> None:
    r = classify(200, {"object": "refund", "id": "re_1", "status": state, "currency": "cny"}, "CNY")
    expected = {"succeeded": "paid", "failed": "declined", "canceled": "declined"}.get(state, "unknown")
    assert r.outcome == expected and r.reference == "re_1"


def test_a_refund_in_another_currency_is_left_for_a_person() -> None:
    r = refund_outcome({"object": "refund", "id": "re_1", "status": "succeeded", "currency": "usd"}, "CNY")
    assert r.outcome == "unknown" and "USD" in (r.error or "")


@given(amount=st.integers(1, 10**12), pi=st.booleans())
def test_the_form_names_the_payment_the_amount_in_minor_units_and_the_metadata(amount: int, pi: bool) -> None:
    ref = "pi_123" if pi else "ch_123"
    form = dict(parse_qsl(refund_form(ref, amount, "CNY", {"refund_id": "rf-1"}).decode()))
    assert form == {"payment_intent" if pi else "charge": ref, "amount": str(amount), "metadata[refund_id]": "rf-1"}


def test_webhook_events_other_than_refunds_are_ignored_and_a_non_event_refused() -> None:
    assert webhook_outcomes({"object": "event", "type": "charge.succeeded", "data": {"object": {}}}) == []
    pending = {"object": "refund", "id": "re_1", "status": "pending"}
    assert webhook_outcomes({"object": "event", "type": "refund.updated", "data": {"object": pending}}) == []
    with pytest.raises(WebhookRefused) as refused:
        webhook_outcomes({"type": "refund.updated"})
    assert refused.value.status == 422


def _due(i: int, reference: str | None) -> Due:
    return Due(f"rf-{i}", uuid.uuid4(), "pi_1", 100, "CNY", "early_scan", f"k-{i}", 1, "c", reference)


@given(
    pending=st.sets(st.integers(0, 8)),
    settled=st.lists(st.tuples(st.integers(0, 12), st.booleans(), st.booleans()), max_size=12),
)
def test_webhook_outcomes_settle_only_pending_refunds_once_each_the_last_word_winning(
    pending: set[int], settled: list[tuple[int, bool, bool]]
) -> None:
    dues = [_due(i, f"re_{i}") for i in sorted(pending)]
    outcomes = [
        WebhookOutcome(f"re_{i}", f"rf-{i}" if by_id else None, ok, None if ok else "failed")
        for i, by_id, ok in settled
    ]
    results = webhook_results(dues, outcomes)
    ids = [r.due.refund_id for r in results]
    assert len(ids) == len(set(ids))
    assert set(ids) == {f"rf-{i}" for i, _, _ in settled if i in pending}
    for r in results:
        last = [ok for i, _, ok in settled if f"rf-{i}" == r.due.refund_id][-1]
        assert r.ok is last and not r.retryable and r.reference == r.due.gateway_reference


# -- Alipay ---------------------------------------------------------------------------------------------------


@given(amount=st.integers(1, 10**12))
def test_alipay_yuan_and_fen_round_trip_exactly(amount: int) -> None:
    from services.refunds.providers.alipay import fen, yuan

    assert fen(yuan(amount, "CNY")) == amount


@given(
    code=st.sampled_from(["10000", "20000", "20001", "40001", "40002", "40004", "40006"]),
    sub=st.sampled_from(
        ["", "ACQ.SYSTEM_ERROR", "ACQ.TRADE_NOT_EXIST", "ACQ.DISCORDANT_REPEAT_REQUEST", "isv.invalid-signature"]
    ),
    fund_change=st.sampled_from(["Y", "N"]),
)
def test_alipay_answers_that_may_hide_a_refund_are_never_final(code: str, sub: str, fund_change: str) -> None:
    from services.refunds.providers.alipay import classify as alipay_classify

    node = {"code": code, "sub_code": sub, "fund_change": fund_change, "trade_no": "2026123"}
    outcome = alipay_classify(node).outcome
    if code == "10000":
        assert outcome == ("paid" if fund_change == "Y" else "unknown")
    elif code == "20000" or sub in ("ACQ.SYSTEM_ERROR", "ACQ.DISCORDANT_REPEAT_REQUEST"):
        assert outcome == "unknown"
    elif code in ("20001", "40006") or sub == "isv.invalid-signature":
        assert outcome == "retryable"
    else:
        assert outcome == "declined"


def test_a_provider_without_its_credentials_fails_the_start_naming_the_variables() -> None:
    from services.refunds.providers import build_gateway
    from services.refunds.settings import RefundsSettings

    with pytest.raises(RuntimeError, match="RETURNFLOW_REFUNDS_STRIPE_API_KEY"):
        build_gateway(RefundsSettings(gateway="stripe"))
    with pytest.raises(
        RuntimeError, match="RETURNFLOW_REFUNDS_ALIPAY_APP_ID, RETURNFLOW_REFUNDS_ALIPAY_APP_PRIVATE_KEY"
    ):
        build_gateway(RefundsSettings(gateway="alipay", alipay_public_key="x"))


# -- Shopify ---------------------------------------------------------------------------------------

SHOPIFY_CODES = st.sampled_from(
    [
        "THROTTLED",
        "ACCESS_DENIED",
        "INTERNAL_SERVER_ERROR",
        "IDEMPOTENCY_CONCURRENT_REQUEST",
        "IDEMPOTENCY_KEY_PARAMETER_MISMATCH",
        "IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED",
        "undefinedField",
    ]
)


@given(status=st.integers(500, 599))
def test_shopify_a_5xx_after_refund_create_is_never_final_and_after_a_query_made_nothing(status: int) -> None:
    from services.refunds.providers.shopify import classify as shopify_classify

    after_mutation = shopify_classify(status, {}, {}, mutation=True)
    assert after_mutation.result is not None and after_mutation.result.outcome == "unknown"
    assert after_mutation.uncertain
    after_query = shopify_classify(status, {}, {}, mutation=False)
    assert after_query.result is not None and after_query.result.outcome == "retryable"


@given(code=SHOPIFY_CODES, mutation=st.booleans())
def test_shopify_graphql_errors_onto_the_ledger(code: str, mutation: bool) -> None:
    from services.refunds.providers.shopify import classify as shopify_classify

    body = {"errors": [{"message": "m", "extensions": {"code": code}}], "data": None}
    got = shopify_classify(200, {}, body, mutation)
    assert got.result is not None
    outcome = got.result.outcome
    if code in ("IDEMPOTENCY_CONCURRENT_REQUEST", "IDEMPOTENCY_KEY_PARAMETER_MISMATCH"):
        assert outcome == "unknown"  # a request under this key may be paying
    elif code == "INTERNAL_SERVER_ERROR":
        assert outcome == ("unknown" if mutation else "retryable")
    elif code == "THROTTLED":
        assert outcome == "retryable"
    else:
        assert outcome == "declined"  # not executed: nothing was made


def test_shopify_throttled_waits_until_the_bucket_holds_the_cost() -> None:
    from services.refunds.providers.shopify import throttle_wait_s

    cost = {"requestedQueryCost": 100, "throttleStatus": {"currentlyAvailable": 40.0, "restoreRate": 50.0}}
    assert throttle_wait_s({"extensions": {"cost": cost}}) == pytest.approx(1.2)
    assert throttle_wait_s({}) is None


@pytest.mark.parametrize(
    ("states", "outcome"),
    [(["SUCCESS"], "paid"), (["FAILURE"], "declined"), (["PENDING"], "unknown"), ([], "unknown")],
)
def test_shopify_a_refund_by_its_transactions(states: list[str], outcome: str) -> None:
    from services.refunds.providers.shopify import refund_outcome as shopify_outcome

    refund = {
        "id": "gid://shopify/Refund/1",
        "totalRefundedSet": {"presentmentMoney": {"amount": "40.00", "currencyCode": "CNY"}},
        "transactions": {"nodes": [{"status": s, "errorCode": None} for s in states]},
    }
    got = shopify_outcome(refund, 4000, "CNY")
    assert got.outcome == outcome and got.reference == "gid://shopify/Refund/1"
    assert shopify_outcome(refund, 4000, "USD").outcome in ("unknown", "declined")  # never paid in another currency


@given(
    paid=st.lists(st.integers(1, 10_000), min_size=1, max_size=4),
    back=st.integers(0, 10_000),
    amount=st.integers(1, 10_000),
)
def test_shopify_the_parent_transaction_covers_the_amount_when_one_can(paid: list[int], back: int, amount: int) -> None:
    from services.refunds.providers.shopify import decimal_amount, parent_transaction

    def money(minor: int) -> dict[str, object]:
        return {"presentmentMoney": {"amount": decimal_amount(minor, "CNY"), "currencyCode": "CNY"}}

    txs: list[dict[str, object]] = [
        {"id": f"t{i}", "kind": "SALE", "status": "SUCCESS", "gateway": "g", "amountSet": money(p)}
        for i, p in enumerate(paid)
    ]
    back = min(back, paid[0] - 1)
    if back:
        txs.append(
            {
                "id": "r",
                "kind": "REFUND",
                "status": "SUCCESS",
                "parentTransaction": {"id": "t0"},
                "amountSet": money(back),
            }
        )
    left = {f"t{i}": p - (back if i == 0 else 0) for i, p in enumerate(paid)}
    chosen = parent_transaction({"transactions": txs}, amount, "CNY")
    assert chosen is not None
    if any(v >= amount for v in left.values()):
        assert left[str(chosen["id"])] >= amount
    else:
        assert left[str(chosen["id"])] == max(left.values())
