"""The read token the tests' services accept (RETURNFLOW_READ_TOKENS: one ops reader)."""

from __future__ import annotations

from pydantic import SecretStr

from returnflow.settings import ReadToken

READER_TOKEN = "test-ops-reader-token"
READ = {"authorization": f"Bearer {READER_TOKEN}"}


def read_tokens() -> dict[str, ReadToken]:
    return {"ops-test": ReadToken(token=SecretStr(READER_TOKEN), role="ops")}
