"""Development fixtures of the refunds service, used only by the platform app (`returnflow up`, the demo,
tests): the simulated payment gateway (`gateway_sim`), its test API key, and a roster of five people
whose bearer tokens and command-signing keys are public. A deployment seeds its own roster from a file
and sets its own key."""

from __future__ import annotations

import base64
import hashlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contracts.events import Role
from returnflow.commands import public_key_text
from services.refunds.repository import RosterEntry


def dev_signing_key(actor_id: str) -> Ed25519PrivateKey:
    """A development actor's command-signing key, derived from the public seed `dev-key-<actor id>`."""
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"dev-key-{actor_id}".encode()).digest())


def dev_signing_key_text(actor_id: str) -> str:
    """The same key as `returnflow grant --key-file` reads it (base64 of its 32 raw bytes)."""
    raw = hashlib.sha256(f"dev-key-{actor_id}".encode()).digest()
    return base64.b64encode(raw).decode()


def _dev(actor_id: str, role: Role, name: str) -> RosterEntry:
    return RosterEntry(
        actor_id=actor_id,
        role=role,
        name=name,
        token=f"dev-token-{actor_id}",
        public_key=public_key_text(dev_signing_key(actor_id).public_key()),
    )


# `returnflow roster seed` with no file (as `make run` does).
DEV_ROSTER: tuple[RosterEntry, ...] = (
    _dev("agent-amy", Role.agent, "Amy (agent)"),
    _dev("agent-bo", Role.agent, "Bo (agent)"),
    _dev("sup-sam", Role.supervisor, "Sam (supervisor)"),
    _dev("mgr-mia", Role.manager, "Mia (manager)"),
    _dev("owner-oz", Role.owner, "Oz (owner)"),
)

DEV_GATEWAY_API_KEY = "dev-gateway-api-key"  # development secrets start with `dev-`

DEV_STRIPE_API_KEY = "dev-stripe-api-key"  # the local Stripe's (services/refunds/dev/stripe_server.py)
DEV_STRIPE_WEBHOOK_SECRET = "dev-stripe-webhook-secret"
DEV_SHOPIFY_ACCESS_TOKEN = "dev-shopify-access-token"  # the local Shopify Admin API's (dev/shopify_admin.py)

# Read by the refunds service and by the simulated gateway (or the local Stripe / Shopify) `returnflow up` starts
# beside it.
ENV: dict[str, str] = {
    "RETURNFLOW_REFUNDS_GATEWAY_API_KEY": DEV_GATEWAY_API_KEY,
    "RETURNFLOW_REFUNDS_STRIPE_API_KEY": DEV_STRIPE_API_KEY,
    "RETURNFLOW_REFUNDS_STRIPE_WEBHOOK_SECRET": DEV_STRIPE_WEBHOOK_SECRET,
    "RETURNFLOW_REFUNDS_SHOPIFY_ACCESS_TOKEN": DEV_SHOPIFY_ACCESS_TOKEN,
}

# Read tokens (RETURNFLOW_READ_TOKENS on `returnflow up`): every roster member reads as an agent.
READERS: dict[str, dict[str, str]] = {e.actor_id: {"token": e.token or "", "role": "agent"} for e in DEV_ROSTER}
