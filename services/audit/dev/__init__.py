"""Development fixtures of the audit service, used only by the platform app (`returnflow up`, the demo,
tests): two returns-team people with public bearer tokens and public command-signing keys (derived from
the seed `dev-audit-key-<person>`). A deployment sets its own."""

from __future__ import annotations

import hashlib
import json

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from returnflow.commands import public_key_text

DEV_TOKENS: dict[str, str] = {"rt-lin": "dev-audit-token-lin", "rt-ana": "dev-audit-token-ana"}


def dev_signing_key(person: str) -> Ed25519PrivateKey:
    """A development person's key for signing checks on inventory.checks."""
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"dev-audit-key-{person}".encode()).digest())


DEV_PUBLIC_KEYS: dict[str, str] = {p: public_key_text(dev_signing_key(p).public_key()) for p in DEV_TOKENS}

ENV: dict[str, str] = {
    "RETURNFLOW_AUDIT_TOKENS": json.dumps(DEV_TOKENS),
    "RETURNFLOW_AUDIT_PUBLIC_KEYS": json.dumps(DEV_PUBLIC_KEYS),
}

# Read tokens (RETURNFLOW_READ_TOKENS on `returnflow up`): the returns-team people read as auditors.
READERS: dict[str, dict[str, str]] = {p: {"token": t, "role": "auditor"} for p, t in DEV_TOKENS.items()}
