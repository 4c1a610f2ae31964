"""The courier feeds' signature schemes, as their providers document them (docs/couriers.md). Pure: the
routes read the request, these decide whether it is signed; the messages are safe to answer.

- Kuaidi100: form field `sign` = uppercase hex MD5 of the form field `param` (as sent) followed by the
  `salt` given with the subscription. MD5 is Kuaidi100's choice, not ours; the salt never travels.
- AfterShip Tracking: header `aftership-hmac-sha256` = base64 HMAC-SHA256 of the raw body, keyed with
  the account's webhook secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

from returnflow.signing import SignatureError

AFTERSHIP_HMAC_HEADER = "aftership-hmac-sha256"


def kuaidi100_sign(param: str, salt: str) -> str:
    return hashlib.md5((param + salt).encode()).hexdigest().upper()


def kuaidi100_verify(sign: str | None, param: str, salts: Sequence[str]) -> None:
    """A push signed with one of the active salts (the hex is compared case-insensitively)."""
    if not sign:
        raise SignatureError("the form field `sign` is missing (MD5 of param + salt, uppercase hex)")
    given = sign.strip().upper().encode()
    if not any(hmac.compare_digest(given, kuaidi100_sign(param, salt).encode()) for salt in salts):
        raise SignatureError("`sign` does not match MD5(param + salt) for any configured Kuaidi100 salt")


def aftership_sign(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def aftership_verify(header: str | None, body: bytes, secrets: Sequence[str]) -> None:
    if not header:
        raise SignatureError(f"the {AFTERSHIP_HMAC_HEADER} header is missing (base64 HMAC-SHA256 of the raw body)")
    given = header.strip().encode()
    if not any(hmac.compare_digest(given, aftership_sign(body, s).encode()) for s in secrets):
        raise SignatureError(
            f"{AFTERSHIP_HMAC_HEADER} does not match the body's HMAC-SHA256 with any configured AfterShip secret"
        )
