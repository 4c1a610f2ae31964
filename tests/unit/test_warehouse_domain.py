"""Pure rules of the warehouse service: scan identity, first moving scan, tracking claims, receipt checks
and the decision to accept a receipt (404 / 409 / 422 decided here, not in SQL)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from contracts.events import MOVING_SCAN_CODES, Condition, Disposition, Movement, ScanCode, is_moving
from services.warehouse.rules import (
    AcceptReceipt,
    CarrierScan,
    DoesNotFit,
    ExpectedLine,
    KnownReceipts,
    NoGoodsExpected,
    NoParcelExpected,
    Parcel,
    ReceiptIdTaken,
    SameReceiptAgain,
    ScanIntake,
    SecondReceipt,
    claim_tracking_numbers,
    decide_receipt,
    delivery_scan,
    first_moving,
    receipt_errors,
    receipt_fingerprint,
    received_lines,
    replacement_errors,
    replacement_wanted,
    scan_identity,
    scan_results,
    stock_movements,
)
from services.warehouse.schemas import ReceiptBody, ScanWebhook

T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def scan(**over):
    body = {"tracking_no": "SF1", "scan_code": "picked_up", "scanned_at": T0.isoformat(), "location": "Hangzhou"}
    body.update(over)
    return ScanWebhook.model_validate(body)


def test_the_same_scan_has_one_identity_whatever_the_timezone_it_is_written_in():
    same = scan(scanned_at=T0.astimezone(timezone(timedelta(hours=8))).isoformat(), location="elsewhere")
    assert scan_identity("sf", scan()) == scan_identity("sf", same)
    assert scan_identity("sf", scan()) != scan_identity("sf", scan(scan_code="in_transit"))
    assert scan_identity("sf", scan()) != scan_identity("yto", scan())
    assert scan_identity("sf", scan(scan_id="E1")) == "sf:E1"


def test_naive_scan_time_is_refused():
    with pytest.raises(ValidationError, match="timezone"):
        scan(scanned_at="2026-11-22T09:00:00")


codes = st.sampled_from(list(ScanCode))


@given(st.lists(st.tuples(codes, st.integers(0, 100)), max_size=8), st.booleans())
def test_at_most_one_first_moving_scan_and_it_is_the_earliest_moving_one(items, already):
    scans = [
        CarrierScan(f"s{i}", "sf", "SF1", c.value, T0 + timedelta(minutes=m), None, "c")
        for i, (c, m) in enumerate(items)
    ]
    chosen = first_moving(already, scans)
    moving = [s for s in scans if s.scan_code not in ("accepted", "exception")]
    if already or not moving:
        assert chosen is None
    else:
        assert chosen == min(moving, key=lambda s: (s.scanned_at, s.scan_id)).scan_id


EXPECTED = [ExpectedLine("A", 2, 1000), ExpectedLine("B", 1, 500)]


def receipt(lines, **over):
    return ReceiptBody.model_validate(
        {"return_id": "8c1f0f9e-4d55-4c8e-9a39-8ef9c1c8b0aa", "inspector_id": "i1", "lines": lines, **over}
    )


def test_receipt_that_fits():
    body = receipt(
        [
            {"sku": "A", "qty_received": 1, "condition": "as_described", "disposition": "restock"},
            {"sku": "A", "qty_received": 1, "condition": "damaged", "disposition": "destroy"},
            {"sku": "B", "qty_received": 0, "condition": "missing"},
        ]
    )
    assert receipt_errors(EXPECTED, body) == []
    lines = received_lines(EXPECTED, body)
    assert [(x.sku, x.qty_requested, x.qty_received, x.condition) for x in lines] == [
        ("A", 2, 1, Condition.as_described),
        ("A", 2, 1, Condition.damaged),
        ("B", 1, 0, Condition.missing),
    ]
    assert lines[2].disposition == Disposition.quarantine
    assert stock_movements(lines) == [("A", Movement.restock, 1), ("A", Movement.destroy, 1)]


@pytest.mark.parametrize(
    ("lines", "field", "words"),
    [
        (
            [{"sku": "A", "qty_received": 3, "condition": "as_described", "disposition": "restock"}],
            "lines.0.qty_received",
            "requested 2",
        ),
        (
            [{"sku": "Z", "qty_received": 1, "condition": "as_described", "disposition": "restock"}],
            "lines.0.sku",
            "not in this return",
        ),
        ([{"sku": "A", "qty_received": 1, "condition": "missing"}], "lines.0.qty_received", "missing"),
        ([{"sku": "A", "qty_received": 0, "condition": "damaged"}], "lines.0.condition", "missing"),
        ([{"sku": "A", "qty_received": 1, "condition": "as_described"}], "lines.0.disposition", "required"),
        (
            [{"sku": "A", "qty_received": 2, "condition": "as_described", "disposition": "restock"}],
            "lines",
            "B not recorded",
        ),
    ],
)
def test_receipt_errors_name_the_field(lines, field, words):
    errors = receipt_errors(
        EXPECTED,
        receipt(
            lines
            + (
                []
                if any(x["sku"] == "B" for x in lines) or field == "lines"
                else [{"sku": "B", "qty_received": 0, "condition": "missing"}]
            )
        ),
    )
    assert any(e["field"] == field and words in e["message"] for e in errors), errors


def test_receipt_names_exactly_one_return_reference_and_fingerprint_ignores_line_order():
    with pytest.raises(ValidationError, match="exactly one"):
        receipt([{"sku": "A", "qty_received": 0, "condition": "missing"}], tracking_no="SF1")
    a = {"sku": "A", "qty_received": 2, "condition": "as_described", "disposition": "restock"}
    b = {"sku": "B", "qty_received": 0, "condition": "missing"}
    assert receipt_fingerprint(receipt([a, b])) == receipt_fingerprint(receipt([b, a]))
    assert receipt_fingerprint(receipt([a, b])) != receipt_fingerprint(receipt([dict(a, qty_received=1), b]))


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["A", "B"]),
            st.integers(0, 3),
            st.sampled_from(list(Condition)),
            st.sampled_from(list(Disposition)),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_a_receipt_that_fits_never_attests_more_than_was_requested(items):
    body = receipt(
        [{"sku": s, "qty_received": q, "condition": c.value, "disposition": d.value} for s, q, c, d in items]
    )
    if receipt_errors(EXPECTED, body):
        return
    moved: dict[str, int] = {}
    for sku, _, qty in stock_movements(received_lines(EXPECTED, body)):
        moved[sku] = moved.get(sku, 0) + qty
    assert moved.get("A", 0) <= 2 and moved.get("B", 0) <= 1


def test_moving_is_picked_up_or_later():
    assert {c for c in ScanCode if is_moving(c)} == MOVING_SCAN_CODES
    assert is_moving("in_transit") and not is_moving("accepted") and not is_moving("exception")


def test_scan_answers_mark_every_later_delivery_of_a_scan_a_duplicate():
    a, b = scan(), scan(scan_code="in_transit")
    items = [ScanIntake("sf", "sf:a", a, "c"), ScanIntake("sf", "sf:a", a, "c"), ScanIntake("sf", "sf:b", b, "c")]
    rid = uuid.uuid4()
    results = scan_results(items, {"sf:a"}, {"sf:a": rid, "sf:b": None})
    assert [(r.duplicate, r.return_id) for r in results] == [(False, rid), (True, rid), (True, None)]


def test_a_tracking_number_is_never_taken_from_the_return_holding_it():
    r1, r2 = uuid.UUID(int=1), uuid.UUID(int=2)
    granted = claim_tracking_numbers({"SF1": r1}, [(r2, "SF1"), (r1, "SF1"), (r2, "SF2"), (r1, "SF2"), (r1, None)])
    assert granted == [None, "SF1", "SF2", None, None]


RID = uuid.UUID("8c1f0f9e-4d55-4c8e-9a39-8ef9c1c8b0aa")
FITS = [
    {"sku": "A", "qty_received": 2, "condition": "as_described", "disposition": "restock"},
    {"sku": "B", "qty_received": 0, "condition": "missing"},
]


def decide(parcel=Parcel(True, "return_and_refund"), known=None, rid=RID, **over):
    body = receipt(over.pop("lines", FITS), **over)
    return decide_receipt(rid, parcel, EXPECTED, known or KnownReceipts(), body, receipt_fingerprint(body))


def test_receipt_decisions():
    assert decide(rid=None) == NoParcelExpected(f"return {RID}")
    assert decide(parcel=None) == NoParcelExpected(f"return {RID}")
    assert decide(parcel=Parcel(False, None)) == NoParcelExpected(f"return {RID}")  # only a tracking number yet
    assert decide(parcel=Parcel(True, "refund_only")) == NoGoodsExpected(RID, "refund_only")
    accepted = decide(receipt_id="dock-1-A")
    assert isinstance(accepted, AcceptReceipt) and accepted.return_id == RID
    known = KnownReceipts()
    known.add("dock-1-A", RID, receipt_fingerprint(receipt(FITS, receipt_id="dock-1-A")))
    assert decide(known=known, receipt_id="dock-1-A") == SameReceiptAgain("dock-1-A", RID)
    assert decide(known=known, receipt_id="dock-2-B") == SecondReceipt("dock-1-A", RID)
    changed = [dict(FITS[0], qty_received=1, condition="damaged"), FITS[1]]
    assert decide(known=known, receipt_id="dock-1-A", lines=changed) == SecondReceipt("dock-1-A", RID)
    other = KnownReceipts()
    other.add("dock-1-A", uuid.uuid4(), "f")
    assert decide(known=other, receipt_id="dock-1-A") == ReceiptIdTaken("dock-1-A")
    refused = decide(lines=[FITS[0]])
    assert isinstance(refused, DoesNotFit) and refused.fields[0]["field"] == "lines"


# -- an exchange's replacement ----------------------------------------------------------------------------


_exchange_lines = st.lists(
    st.builds(
        ExpectedLine,
        sku=st.sampled_from(["A", "B", "C"]),
        qty=st.integers(1, 5),
        unit_price=st.just(100),
        replacement_sku=st.sampled_from([None, "A2", "B2"]),
    ),
    min_size=1,
    max_size=4,
)


@given(_exchange_lines, st.randoms())
def test_a_shipment_of_what_the_exchange_asked_for_fits_in_any_line_order(expected, rnd):
    wanted = replacement_wanted(expected)
    lines = [(sku, 1) for sku, qty in wanted.items() for _ in range(qty)]  # split into single units
    rnd.shuffle(lines)
    assert replacement_errors(expected, lines) == []


@given(_exchange_lines, st.sampled_from(["A", "A2", "B", "Z"]), st.integers(-1, 1))
def test_a_shipment_off_by_a_sku_or_a_unit_is_refused_naming_a_field(expected, sku, delta):
    wanted = replacement_wanted(expected)
    lines = list(wanted.items())
    if delta == 0:
        lines.append((sku, 1))  # one unit more of some SKU, asked for or not
    else:
        lines[0] = (lines[0][0], lines[0][1] + delta)  # one unit more or less
    fits = sorted(wanted.items()) == sorted(_totals(lines).items()) and all(q > 0 for _, q in lines)
    errors = replacement_errors(expected, lines)
    assert (errors == []) == fits
    assert all(e["field"] == "lines" or e["field"].startswith("lines.") for e in errors)


def _totals(lines):
    out = {}
    for sku, qty in lines:
        out[sku] = out.get(sku, 0) + qty
    return out


@given(st.lists(st.tuples(st.sampled_from(["in_transit", "delivered", "exception"]), st.integers(0, 50)), max_size=6))
def test_the_replacement_is_delivered_by_its_earliest_delivered_scan_once(codes):
    scans = [
        CarrierScan(f"s{i}", "sf", "OUT1", code, datetime(2026, 11, 22, tzinfo=UTC) + timedelta(hours=h), None, "c")
        for i, (code, h) in enumerate(codes)
    ]
    first = delivery_scan(False, scans)
    assert first == delivery_scan(False, list(reversed(scans)))
    delivered = [s for s in scans if s.scan_code == "delivered"]
    assert (first is None) == (not delivered)
    assert delivery_scan(True, scans) is None
