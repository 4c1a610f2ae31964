"""The credential a person's CLI commands send: their bearer token, from (first found) `--token`, the
environment variable RETURNFLOW_TOKEN, or the credentials file `returnflow login` writes
($RETURNFLOW_CREDENTIALS, else ~/.config/returnflow/credentials.json, mode 0600). Decisions need a
roster token; reads (`returnflow timeline`, `report`) take any reader token (see the README)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx

TOKEN_ENV = "RETURNFLOW_TOKEN"
CREDENTIALS_ENV = "RETURNFLOW_CREDENTIALS"


class CliError(Exception):
    """One line for the person at the terminal (exit 1)."""


def credentials_path() -> Path:
    if os.environ.get(CREDENTIALS_ENV):
        return Path(os.environ[CREDENTIALS_ENV]).expanduser()
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "returnflow" / "credentials.json"


def read_credentials() -> dict[str, Any] | None:
    path = credentials_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read the credentials file {path}: {exc}".splitlines()[0]) from None
    return data if isinstance(data, dict) and isinstance(data.get("token"), str) else None


def write_credentials(data: dict[str, Any]) -> Path:
    """Owner-only: the directory 0700, the file 0600 from its creation (never readable by others)."""
    path = credentials_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode on O_CREAT: make it ours
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    return path


def resolve_token(flag: str | None) -> tuple[str, str]:
    """(token, where it came from)."""
    if flag:
        return flag, "--token"
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV], TOKEN_ENV
    saved = read_credentials()
    if saved:
        return saved["token"], str(credentials_path())
    raise CliError(
        "no credential: run `returnflow login`, set RETURNFLOW_TOKEN, or pass --token "
        "(your own token; the CLI never acts as anyone else)"
    )


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def problem_text(r: httpx.Response) -> str:
    """An error answer (problem details) in one line: its detail, and each bad field."""
    try:
        body = r.json()
    except ValueError:
        return f"HTTP {r.status_code}"
    if not isinstance(body, dict):
        return f"HTTP {r.status_code}"
    text = str(body.get("detail") or f"HTTP {r.status_code}")
    fields = body.get("fields") or []
    if fields and isinstance(fields, list) and isinstance(fields[0], dict):
        text += " (" + ", ".join(f"{f.get('field')}: {f.get('message')}" for f in fields) + ")"
    return text
