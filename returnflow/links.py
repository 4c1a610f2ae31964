"""Customer links: the short opaque token in every SMS that opens one return's status page.

token = base64url(HMAC-SHA256(secret, "returnflow/customer-link/v1/" + return id bytes))[:128 bits]

Notify builds the link into a text without asking anyone (it knows the return id and the secret);
the returns service stores the SHA-256 of each return's token at intake and finds the return by it.
A token names one return, cannot be guessed (128 bits of an HMAC; the return id alone does not give
it), and does not carry the return id: the link shows a customer nothing internal. Expiry and
revocation are the returns service's state, not the token's (its rules decide them).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from uuid import UUID

TOKEN_BYTES = 16  # 128 bits: 22 characters of base64url, short enough for an SMS
TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_-]{22}$")
PAGE_PATH = "/r/"
_DOMAIN = b"returnflow/customer-link/v1/"


def link_token(secret: bytes, return_id: UUID) -> str:
    mac = hmac.new(secret, _DOMAIN + return_id.bytes, hashlib.sha256).digest()[:TOKEN_BYTES]
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def token_digest(token: str) -> bytes:
    """What is stored to find a return by its token: a leaked table gives no working link."""
    return hashlib.sha256(token.encode()).digest()


def is_token_shaped(text: str) -> bool:
    return TOKEN_PATTERN.match(text) is not None


def link_url(base_url: str, token: str) -> str:
    return base_url.rstrip("/") + PAGE_PATH + token


def customer_link(base_url: str | None, secret: bytes | None, return_id: UUID) -> str | None:
    """The link a text carries to its return's page; None until both the public base URL and the link
    secret are configured (a text then goes without one)."""
    if not base_url or not secret:
        return None
    return link_url(base_url, link_token(secret, return_id))
