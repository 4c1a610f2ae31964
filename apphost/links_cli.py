"""`returnflow link revoke RETURN_ID`: revoke a customer's return-page link (a customer reports that a
text was forwarded), through the returns HTTP API, with the person's own reader token (ops or agent:
`--token`, RETURNFLOW_TOKEN, or `returnflow login`'s file). The revocation is recorded under the
token's holder. Exit 0 revoked (or revoked before, named), 1 refused, unknown return or unreachable.
"""

from __future__ import annotations

import argparse
import os
import uuid

import httpx

from apphost.credentials import TOKEN_ENV, CliError, bearer, problem_text, resolve_token
from apphost.registry import base_url_for
from returnflow.settings import Settings

URL_ENV = "RETURNFLOW_RETURNS_URL"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    link = sub.add_parser("link", help="customers' return-page links: revoke one")
    lsub = link.add_subparsers(dest="link_cmd", required=True)
    p = lsub.add_parser("revoke", help="the return's link then answers 'no longer valid' (410); idempotent")
    p.add_argument("return_id")
    p.add_argument("--token", help=f"your reader token, ops or agent (default: ${TOKEN_ENV}, then the login's file)")
    p.add_argument("--url", help=f"returns service base URL (default: ${URL_ENV}, else the local stack's)")


def run(args: argparse.Namespace, settings: Settings) -> int | None:
    """Run a `link` command; None when `args` is not one of ours."""
    if args.cmd != "link":
        return None
    return revoke_cmd(settings, args.return_id, args.token, args.url)


def revoke_cmd(settings: Settings, return_id: str, token_flag: str | None, url: str | None) -> int:
    try:
        rid = uuid.UUID(return_id)
    except ValueError:
        raise CliError(f"not a return id: {return_id!r}") from None
    token, _ = resolve_token(token_flag)
    base = (url or os.environ.get(URL_ENV) or base_url_for(settings, "returns")).rstrip("/")
    try:
        with httpx.Client(timeout=10) as client:
            r = client.post(f"{base}/v1/returns/{rid}/links/revocation", headers=bearer(token))
    except httpx.TransportError as exc:
        raise CliError(f"cannot reach the returns service at {base} ({type(exc).__name__})") from None
    if r.status_code != 200:
        raise CliError(f"refused: {problem_text(r)} (HTTP {r.status_code}, return {rid})")
    body = r.json()
    when = f"{body['revoked_at'][:19]} by {body['revoked_by']}"
    if body["already_revoked"]:
        print(f"already revoked: the customer link of return {rid} ({when})")
    else:
        print(f"revoked: the customer link of return {rid} ({when}); it now answers 'no longer valid'")
    return 0
