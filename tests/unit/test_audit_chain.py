"""The audit log's hash chain (services/audit/chain.py): an intact chain verifies; any change to any
stored entry is named at that entry; a removed tail is caught by an anchor."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import orjson
from hypothesis import given
from hypothesis import strategies as st

from services.audit import chain

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
entries = st.lists(
    st.tuples(
        st.sampled_from(["side.recorded", "movement.verified", "discrepancy.opened", "discrepancy.resolved"]),
        st.none() | st.uuids().map(str),
        st.none() | st.text(min_size=1, max_size=10),
        st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    ),
    min_size=1,
    max_size=12,
)


def build(items) -> list[chain.Row]:
    rows, prev = [], chain.GENESIS
    for i, (type_, rid, sku, data) in enumerate(items, 1):
        at = T0 + timedelta(seconds=i, microseconds=i)
        content = chain.content_of(i, type_, at, rid, sku, data)
        h = chain.entry_hash(prev, content)
        rows.append(chain.Row(i, type_, at, rid, sku, content, prev, h))
        prev = h
    return rows


def verify(rows, anchors=None) -> chain.VerifyResult:
    v = chain.ChainVerifier(anchors=anchors or {})
    for r in rows:
        if not v.feed(r):
            break
    return v.result()


@given(entries)
def test_an_intact_chain_verifies(items):
    rows = build(items)
    result = verify(rows)
    assert result.ok and result.checked == len(rows)
    assert (result.head_seq, result.head_hash) == (rows[-1].seq, rows[-1].hash)


def _tamper(row: chain.Row, what: str, data) -> chain.Row:
    if what == "content":
        # change one character of the content, keeping it JSON where possible
        new = row.content.replace('"type":"', '"type":"x', 1)
        return dataclasses.replace(row, content=new)
    if what == "data":
        obj = chain.canonical({**orjson.loads(row.content), "data": {"forged": True}})
        return dataclasses.replace(row, content=obj)
    if what == "hash":
        return dataclasses.replace(row, hash=("f" if row.hash[0] != "f" else "e") + row.hash[1:])
    if what == "prev_hash":
        return dataclasses.replace(row, prev_hash="1" * 64)
    if what == "type":
        return dataclasses.replace(row, type=row.type + "x")
    if what == "sku":
        return dataclasses.replace(row, sku=(row.sku or "") + "x")
    if what == "recorded_at":
        return dataclasses.replace(row, recorded_at=row.recorded_at + timedelta(seconds=1))
    if what == "rehash":  # content changed and its own hash recomputed: the next entry's prev_hash breaks
        obj = chain.canonical({**orjson.loads(row.content), "data": {"forged": True}})
        return dataclasses.replace(row, content=obj, hash=chain.entry_hash(row.prev_hash, obj))
    raise AssertionError(what)


@given(
    entries,
    st.data(),
    st.sampled_from(["content", "data", "hash", "prev_hash", "type", "sku", "recorded_at", "rehash"]),
)
def test_any_change_to_a_stored_entry_is_named(items, data, what):
    rows = build(items)
    k = data.draw(st.integers(0, len(rows) - 1))
    tampered = [*rows[:k], _tamper(rows[k], what, data), *rows[k + 1 :]]
    result = verify(tampered)
    if what == "rehash":
        if k == len(rows) - 1:
            return  # a rewritten last entry is only caught by an anchor (next test)
        assert result.first_bad == rows[k].seq + 1 and "prev_hash" in (result.problem or "")
    else:
        assert not result.ok and result.first_bad == rows[k].seq, result.problem
        assert result.checked == k


@given(entries.filter(lambda e: len(e) >= 2), st.data())
def test_a_removed_entry_is_named(items, data):
    rows = build(items)
    k = data.draw(st.integers(0, len(rows) - 2))
    result = verify(rows[:k] + rows[k + 1 :])
    assert result.first_bad == rows[k + 1].seq and "expected entry" in (result.problem or "")


@given(entries, st.data())
def test_anchors_catch_a_rewritten_or_removed_tail(items, data):
    rows = build(items)
    anchor = {rows[-1].seq: rows[-1].hash}
    assert verify(rows, anchor).ok
    cut = verify(rows[:-1], anchor)
    assert not cut.ok and cut.first_bad == rows[-1].seq
    rewritten = [*rows[:-1], _tamper(rows[-1], "rehash", data)]
    assert verify(rewritten).ok  # without an anchor a rewritten last entry is self-consistent
    bad = verify(rewritten, anchor)
    assert not bad.ok and bad.first_bad == rows[-1].seq and "anchor" in (bad.problem or "")
