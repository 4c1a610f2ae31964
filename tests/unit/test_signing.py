"""Webhook signatures: property tests over bodies, secrets and clocks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from returnflow.signing import SignatureError, shopify_sign, shopify_verify, sign, verify

secrets = st.binary(min_size=8, max_size=64)
bodies = st.binary(max_size=2048)
NOW = 1_800_000_000


@given(secret=secrets, other=secrets, body=bodies, skew=st.integers(-300, 300))
def test_signed_bodies_verify_with_either_active_secret(secret, other, body, skew):
    header = sign(secret, body, NOW + skew)
    verify(header, body, [other, secret], 300, now=NOW)
    verify(header, body, [secret, other], 300, now=NOW)


@given(secret=secrets, body=bodies.filter(bool), pos=st.integers(0, 2047), bit=st.integers(0, 7))
def test_any_flipped_bit_fails(secret, body, pos, bit):
    header = sign(secret, body, NOW)
    tampered = bytearray(body)
    tampered[pos % len(body)] ^= 1 << bit
    with pytest.raises(SignatureError, match="does not match"):
        verify(header, bytes(tampered), [secret], 300, now=NOW)


@given(secret=secrets, body=bodies, skew=st.integers(301, 10**6), sign_bit=st.sampled_from([-1, 1]))
def test_stale_or_future_timestamps_fail(secret, body, skew, sign_bit):
    with pytest.raises(SignatureError, match="from now"):
        verify(sign(secret, body, NOW + sign_bit * skew), body, [secret], 300, now=NOW)


@given(secret=secrets, wrong=secrets, body=bodies)
def test_wrong_secret_fails(secret, wrong, body):
    if secret == wrong:
        return
    with pytest.raises(SignatureError):
        verify(sign(secret, body, NOW), body, [wrong], 300, now=NOW)
    with pytest.raises(SignatureError):
        shopify_verify(shopify_sign(secret, body), body, [wrong])
    shopify_verify(shopify_sign(secret, body), body, [wrong, secret])


@pytest.mark.parametrize("header", [None, "", "v1=ab", "t=1", "t=abc,v1=ab", "garbage", "t=1,t=2,v1=ab"])
def test_malformed_headers(header):
    with pytest.raises(SignatureError):
        verify(header, b"{}", [b"secret-12345"], 300, now=NOW)
