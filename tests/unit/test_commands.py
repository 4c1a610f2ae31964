"""Signed commands (returnflow/commands.py): canonical form, signatures, freshness."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import orjson
from hypothesis import given
from hypothesis import strategies as st

from returnflow import commands

T = datetime(2026, 11, 11, 10, 0, tzinfo=UTC)
W, SKEW = timedelta(seconds=300), timedelta(seconds=30)
PRIVATE, PUBLIC = commands.new_keypair()
KEY = commands.private_key_from_text(PRIVATE)


def command(**over: object) -> dict[str, object]:
    return {
        "type": "refund.command",
        "event_id": "6f1c2a4e-2d0b-4d8e-9a55-0d6c1b7e9f31",
        "occurred_at": T.isoformat(),
        "return_id": "0b8f7e4c-1111-4d8e-9a55-0d6c1b7e9f31",
        "correlation_id": "c-1",
        "action": "grant_free_refund",
        "actor_id": "owner-oz",
        "amount": 2000,
        "note": "兔子 broke",
        **over,
    }


def check(value: dict[str, object] | bytes, key: str | None = PUBLIC, at: datetime = T) -> str | None:
    return commands.check(value, key, T, at, W, SKEW)


def test_a_signed_fresh_command_is_its_actors() -> None:
    assert check(commands.signed(command(), KEY)) is None
    assert check(orjson.dumps(commands.signed(command(), KEY))) is None


def test_the_canonical_form_is_what_a_producer_in_any_language_writes() -> None:
    obj = command()
    python_json = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert commands.canonical(obj) == python_json
    assert commands.canonical({**obj, "signature": "x"}) == python_json


@given(
    st.dictionaries(
        st.text(max_size=8), st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=8), st.none()), max_size=6
    )
)
def test_key_order_and_whitespace_do_not_matter(extra: dict[str, object]) -> None:
    obj = {**extra, **command()}
    sig = commands.sign(obj, KEY)
    reordered = dict(reversed(list(obj.items())))
    assert check({**reordered, "signature": sig}) is None


def test_refusals() -> None:
    good = commands.signed(command(), KEY)
    _, other_public = commands.new_keypair()
    other = commands.private_key_from_text(commands.new_keypair()[0])
    assert check(command()) == "unsigned"
    assert check(good, key=None) == "unknown_actor"
    assert check(good, key=other_public) == "bad_signature"
    assert check(commands.signed(command(), other)) == "bad_signature"  # signed by someone else
    assert check({**good, "amount": 20000}) == "bad_signature"  # tampered
    assert check({**good, "signature": "not base64!"}) == "bad_signature"
    assert check(good, at=T + W + timedelta(seconds=1)) == "stale"
    assert check(good, at=T + W) is None  # a backlog consumed late is still accepted
    assert check(good, at=T - SKEW - timedelta(seconds=1)) == "from_the_future"
    assert commands.check(good, PUBLIC, T, None, W, SKEW) == "stale"
    assert check(b"[1]") == "malformed" and check(b"{") == "malformed"


def test_keys_round_trip_as_text_and_pem() -> None:
    from cryptography.hazmat.primitives import serialization

    pem = KEY.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    assert commands.public_key_text(commands.private_key_from_text(pem).public_key()) == PUBLIC
    for bad in ("", "abc", PUBLIC[:-4]):
        try:
            commands.public_key_from_text(bad)
        except commands.KeyFormatError:
            continue
        raise AssertionError(bad)
