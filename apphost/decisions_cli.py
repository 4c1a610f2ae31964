"""`returnflow login | logout | approve | reject | grant`: a person's refund decisions, with their own
credential, through the refunds HTTP API.

The credential is the person's roster bearer token, from (first found) `--token`, the environment
variable RETURNFLOW_TOKEN, or the credentials file `returnflow login` writes ($RETURNFLOW_CREDENTIALS,
else ~/.config/returnflow/credentials.json, mode 0600). The CLI never picks a credential by an actor id:
the actor is whoever the token belongs to, and the role is the roster's.

A decision is POSTed to /v1/refunds/{return_id}/decisions with an Idempotency-Key (a retry after a lost
answer gets the first answer, never a second refund). The real outcome is printed and is the exit code:

    0  took effect (refunded / rejected)
    3  waits: escalated to a person of the role printed, or parked until the return reaches refunds
    1  refused (and why), or no credential, an unknown token, the service unreachable
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import uuid
from typing import Any

import httpx

from apphost.credentials import (
    TOKEN_ENV,
    CliError,
    credentials_path,
    problem_text,
    read_credentials,
    resolve_token,
    write_credentials,
)
from apphost.registry import base_url_for
from returnflow.settings import Settings

EXIT_DONE, EXIT_REFUSED, EXIT_ESCALATED = 0, 1, 3
URL_ENV = "RETURNFLOW_REFUNDS_URL"
ATTEMPTS = 3  # on a lost connection the same Idempotency-Key is sent again


def refunds_url(settings: Settings, flag: str | None) -> str:
    saved = read_credentials() or {}
    url = flag or os.environ.get(URL_ENV) or saved.get("refunds_url") or base_url_for(settings, "refunds")
    return str(url).rstrip("/")


def _request(method: str, url: str, token: str, **kw: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}", **kw.pop("headers", {})}
    last: Exception | None = None
    for _ in range(ATTEMPTS):
        try:
            with httpx.Client(timeout=10) as client:
                return client.request(method, url, headers=headers, **kw)
        except httpx.TransportError as exc:
            last = exc
    raise CliError(f"cannot reach the refunds service at {url.split('/v1/')[0]} ({type(last).__name__})")


def whoami(base: str, token: str) -> dict[str, Any]:
    r = _request("GET", f"{base}/v1/refunds/whoami", token)
    if r.status_code == 401:
        raise CliError(f"refused: the refunds service does not know this token ({problem_text(r)})")
    if r.status_code != 200:
        raise CliError(f"refused: {problem_text(r)}")
    body: dict[str, Any] = r.json()
    return body


def login_cmd(settings: Settings, token: str | None, url: str | None) -> int:
    if not token:
        if sys.stdin.isatty():
            token = getpass.getpass("roster token: ")
        else:
            token = sys.stdin.readline()
    token = (token or "").strip()
    if not token:
        raise CliError("no token given")
    base = refunds_url(settings, url)
    me = whoami(base, token)
    path = write_credentials({"token": token, "actor_id": me["actor_id"], "role": me["role"], "refunds_url": base})
    print(f"logged in as {me['actor_id']} ({me['role']}) at {base}; credential saved to {path} (mode 0600)")
    return EXIT_DONE


def logout_cmd() -> int:
    path = credentials_path()
    try:
        path.unlink()
    except FileNotFoundError:
        print(f"not logged in ({path} does not exist)")
        return EXIT_DONE
    print(f"logged out: {path} removed")
    return EXIT_DONE


def decide_cmd(
    settings: Settings,
    action: str,
    return_id: str,
    amount: int | None,
    note: str | None,
    token_flag: str | None,
    url: str | None,
    escalation_id: str | None = None,
) -> int:
    try:
        rid = uuid.UUID(return_id)
    except ValueError:
        raise CliError(f"not a return id: {return_id!r}") from None
    if action == "grant_free_refund" and amount is None:
        raise CliError("grant needs --amount (minor units)")
    if amount is not None and amount <= 0:
        raise CliError("amount must be a positive number of minor units")
    token, _ = resolve_token(token_flag)
    base = refunds_url(settings, url)
    body: dict[str, Any] = {"action": action}
    if amount is not None:
        body["amount"] = amount
    if note:
        body["note"] = note
    if escalation_id:
        body["escalation_id"] = escalation_id
    key = str(uuid.uuid4())
    r = _request("POST", f"{base}/v1/refunds/{rid}/decisions", token, json=body, headers={"idempotency-key": key})
    return report(r, rid)


def report(r: httpx.Response, rid: uuid.UUID) -> int:
    """Print the outcome in one line; the exit code says it too."""
    try:
        body = r.json() if r.content else {}
    except ValueError:
        body = {}
    who = f"{body.get('actor_id')} ({body.get('role')})" if body.get("actor_id") else "you"
    amount = f" {body['amount']} (minor units)" if body.get("amount") is not None else ""
    if body.get("escalation_id"):
        amount += f" (escalation {body['escalation_id']})"
    if r.status_code == 200:
        print(f"done: {body.get('result', 'took effect')}{amount} on return {rid} by {who}: {body.get('message', '')}")
        return EXIT_DONE
    if r.status_code == 202 and body.get("result") == "parked":
        print(f"waiting:{amount} on return {rid} by {who}: {body.get('message', '')}")
        return EXIT_ESCALATED
    if r.status_code == 202:
        role = body.get("required_role", "someone with more authority")
        print(f"escalated to {role}:{amount} on return {rid} by {who} waits for a {role} ({body.get('message', '')})")
        return EXIT_ESCALATED
    if r.status_code == 401:
        print(f"refused: the refunds service does not know this token ({problem_text(r)})", file=sys.stderr)
        return EXIT_REFUSED
    print(f"refused: {problem_text(r)} (HTTP {r.status_code}, return {rid})", file=sys.stderr)
    return EXIT_REFUSED


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("login", help="check your roster token with the refunds service and save it (0600)")
    p.add_argument("--token", help="your roster token (asked for when left out; or read from stdin)")
    p.add_argument("--url", help=f"refunds service base URL (default: ${URL_ENV} or the local stack's)")
    sub.add_parser("logout", help="remove the saved credential")
    for cmd, what in (
        ("approve", "approve an open escalation of the return (--escalation ID, else the oldest you may decide)"),
        ("reject", "reject an open escalation of the return (--escalation ID, else the oldest you may decide)"),
        ("grant", "grant a free refund (--amount, minor units)"),
    ):
        p = sub.add_parser(
            cmd,
            help=f"{what}, as yourself, through the refunds API; exit 0 done, 3 escalated, 1 refused",
        )
        p.add_argument("return_id")
        p.add_argument("--amount", type=int, help="minor units")
        p.add_argument("--note")
        if cmd != "grant":
            p.add_argument("--escalation", help="the escalation id to decide (`returnflow queue` lists them)")
        p.add_argument("--token", help=f"your roster token (default: ${TOKEN_ENV}, then `returnflow login`'s file)")
        p.add_argument("--url", help=f"refunds service base URL (default: ${URL_ENV}, the login's, the local stack's)")


def run(args: argparse.Namespace, settings: Settings) -> int | None:
    """Run one of these commands; None when `args` is not one of ours."""
    if args.cmd == "login":
        return login_cmd(settings, args.token, args.url)
    if args.cmd == "logout":
        return logout_cmd()
    if args.cmd in ("approve", "reject", "grant"):
        action = "grant_free_refund" if args.cmd == "grant" else args.cmd
        escalation = getattr(args, "escalation", None)
        return decide_cmd(settings, action, args.return_id, args.amount, args.note, args.token, args.url, escalation)
    return None
