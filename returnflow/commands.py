"""People's commands on Kafka prove who sent them: an Ed25519 signature over the command's canonical
form, checked against the public key the service holds for the actor the command names, and a freshness
window around the Kafka record's timestamp.

Canonical form (what is signed): the command's JSON object without its `signature` member, keys sorted
at every level, no whitespace, UTF-8 (non-ASCII characters not escaped) — in Python
`orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)` or
`json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()`. The service checks
the bytes as they arrived (not its own re-serialization of the model), so a producer in any language
only has to sort its own object's keys. The signature is standard base64 of the 64-byte signature;
a public key is standard base64 of the 32-byte raw Ed25519 key.

Freshness: `occurred_at` must lie within `window_s` before the record's timestamp (a consumer catching
up on a backlog still accepts a command that was fresh when it was produced) and at most `skew_s`
after it. A replayed command is a duplicate (its event id, which the signature covers, was applied
already), so freshness only has to bound how long a captured command is worth replaying.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from contracts.events import Message

SIGNATURE_FIELD = "signature"
M = TypeVar("M", bound=Message)

Refusal = Literal["malformed", "unsigned", "unknown_actor", "bad_signature", "stale", "from_the_future"]
"""Why a command was not accepted as its actor's: the value of the refusal metric's `reason` label."""

REFUSAL_TEXT: dict[str, str] = {
    "malformed": "the command is not a JSON object",
    "unsigned": "the command carries no signature",
    "unknown_actor": "no public key is on file for the actor the command names",
    "bad_signature": "the signature does not verify with the actor's public key (other signer, or altered)",
    "stale": "the command is older than the freshness window allows",
    "from_the_future": "the command is dated after its Kafka record by more than the allowed clock skew",
}


class KeyFormatError(ValueError):
    """A key that cannot be read (one line for the operator)."""


# -- canonical form ------------------------------------------------------------------------------------


def canonical(obj: dict[str, Any]) -> bytes:
    """The signed bytes of a command given as a JSON object: every member but the signature, sorted keys."""
    return orjson.dumps({k: v for k, v in obj.items() if k != SIGNATURE_FIELD}, option=orjson.OPT_SORT_KEYS)


# -- keys ------------------------------------------------------------------------------------------------


def public_key_text(key: Ed25519PublicKey) -> str:
    return base64.b64encode(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()


def public_key_from_text(text: str) -> Ed25519PublicKey:
    """A public key from standard base64 of its 32 raw bytes."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        raise KeyFormatError("not an Ed25519 public key (base64 of 32 bytes expected)") from None


def private_key_text(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(
        key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    ).decode()


def private_key_from_text(text: str) -> Ed25519PrivateKey:
    """A private key from a PEM (PKCS#8, as `openssl genpkey -algorithm ed25519` writes) or from standard
    base64 of its 32 raw bytes."""
    data = text.strip()
    try:
        if data.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(data.encode(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError("not Ed25519")
            return key
        return Ed25519PrivateKey.from_private_bytes(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError, TypeError):
        raise KeyFormatError("not an Ed25519 private key (PKCS#8 PEM or base64 of 32 bytes expected)") from None


def new_keypair() -> tuple[str, str]:
    """(private, public) as text, for `returnflow keys new` and tests."""
    key = Ed25519PrivateKey.generate()
    return private_key_text(key), public_key_text(key.public_key())


# -- signing and checking --------------------------------------------------------------------------------


def sign(obj: dict[str, Any], key: Ed25519PrivateKey) -> str:
    """The signature of a command given as a JSON object (its `signature` member, if any, is not signed)."""
    return base64.b64encode(key.sign(canonical(obj))).decode()


def signed(obj: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """The command with its signature member set."""
    return {**obj, SIGNATURE_FIELD: sign(obj, key)}


def signed_message(message: M, key: Ed25519PrivateKey) -> M:
    """A command model with its signature set: what `returnflow` tools and tests put on Kafka as
    `message.model_dump_json()`."""
    obj = orjson.loads(message.model_dump_json())
    return message.model_copy(update={SIGNATURE_FIELD: sign(obj, key)})


def verify_signature(obj: dict[str, Any], key: Ed25519PublicKey) -> bool:
    sig = obj.get(SIGNATURE_FIELD)
    if not isinstance(sig, str):
        return False
    try:
        key.verify(base64.b64decode(sig, validate=True), canonical(obj))
    except (binascii.Error, ValueError, TypeError, InvalidSignature):
        return False  # TypeError: a value orjson cannot write (an integer beyond 64 bits)
    return True


def freshness(occurred_at: datetime, record_time: datetime, window: timedelta, skew: timedelta) -> Refusal | None:
    """`stale` / `from_the_future` relative to the Kafka record's timestamp, or None when fresh."""
    if occurred_at < record_time - window:
        return "stale"
    if occurred_at > record_time + skew:
        return "from_the_future"
    return None


def check(
    value: bytes | dict[str, Any],
    public_key: str | Ed25519PublicKey | None,
    occurred_at: datetime,
    record_time: datetime | None,
    window: timedelta,
    skew: timedelta,
) -> Refusal | None:
    """Why a command (its record value as it arrived) is not its actor's, or None when it is: signed,
    the signature verifies with the actor's public key (None: no key on file), and fresh. Without a
    record timestamp (a record of a broker that sets none) freshness cannot be judged: refused as stale."""
    if isinstance(value, bytes):
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError:
            return "malformed"
    else:
        obj = value
    if not isinstance(obj, dict):
        return "malformed"
    if not obj.get(SIGNATURE_FIELD):
        return "unsigned"
    if public_key is None:
        return "unknown_actor"
    try:
        key = public_key_from_text(public_key) if isinstance(public_key, str) else public_key
    except KeyFormatError:
        return "unknown_actor"
    if not verify_signature(obj, key):
        return "bad_signature"
    if record_time is None:
        return "stale"
    return freshness(occurred_at, record_time, window, skew)
