"""The audit log's hash chain: canonical content, entry hashes and verification. Pure, no I/O.

Each entry's `content` is the canonical JSON (keys sorted, no whitespace, UTF-8) of
`{"seq", "type", "recorded_at", "return_id", "sku", "data"}`, and

    hash = sha256(prev_hash + "\\n" + content)   (hex; prev_hash of entry 1 is 64 zeros)

`ChainVerifier` is fed the stored rows in sequence order and reports the first entry that does not
match: a gap in the sequence, a prev_hash that is not the previous entry's hash, columns that differ
from the hashed content, content that does not match its hash, or a hash that differs from an
anchor recorded elsewhere (every inventory.verified / inventory.discrepancy event carries the
sequence number and hash of its log entry, so a rewritten tail can be caught too).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

GENESIS = "0" * 64


def canonical(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode()


def timestamp(dt: datetime) -> str:
    return dt.isoformat(timespec="microseconds")


def content_of(
    seq: int, type_: str, recorded_at: datetime, return_id: str | None, sku: str | None, data: Mapping[str, Any]
) -> str:
    return canonical(
        {
            "seq": seq,
            "type": type_,
            "recorded_at": timestamp(recorded_at),
            "return_id": return_id,
            "sku": sku,
            "data": dict(data),
        }
    )


def entry_hash(prev_hash: str, content: str) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + content.encode()).hexdigest()


@dataclass(frozen=True)
class Row:
    """An audit_log row as stored."""

    seq: int
    type: str
    recorded_at: datetime
    return_id: str | None
    sku: str | None
    content: str
    prev_hash: str
    hash: str


@dataclass
class VerifyResult:
    ok: bool
    checked: int
    head_seq: int
    head_hash: str
    first_bad: int | None = None
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "head": {"seq": self.head_seq, "hash": self.head_hash},
            "first_bad_seq": self.first_bad,
            "problem": self.problem,
        }


@dataclass
class ChainVerifier:
    anchors: Mapping[int, str] = field(default_factory=dict)
    checked: int = 0
    expected_seq: int = 1
    prev_hash: str = GENESIS
    first_bad: int | None = None
    problem: str | None = None

    def feed(self, row: Row) -> bool:
        """Check one row; False (and the problem recorded) at the first that does not match."""
        if self.first_bad is not None:
            return False
        problem = self._check(row)
        if problem is not None:
            self.first_bad = row.seq
            self.problem = problem
            return False
        self.checked += 1
        self.expected_seq = row.seq + 1
        self.prev_hash = row.hash
        return True

    def _check(self, row: Row) -> str | None:
        if row.seq != self.expected_seq:
            return f"expected entry {self.expected_seq} here (an entry is missing or was renumbered)"
        if row.prev_hash != self.prev_hash:
            what = "the previous entry" if row.seq > 1 else "the genesis value"
            return f"prev_hash does not match the hash of {what} (an earlier entry or its hash was altered)"
        try:
            c = orjson.loads(row.content)
        except orjson.JSONDecodeError:
            return "content is not valid JSON"
        if not isinstance(c, dict):
            return "content is not a JSON object"
        if c.get("seq") != row.seq or c.get("type") != row.type:
            return "seq/type columns differ from the hashed content"
        if c.get("return_id") != row.return_id or c.get("sku") != row.sku:
            return "return_id/sku columns differ from the hashed content"
        if c.get("recorded_at") != timestamp(row.recorded_at):
            return "recorded_at column differs from the hashed content"
        if canonical(c) != row.content:
            return "content is not in canonical form (it was edited)"
        if entry_hash(row.prev_hash, row.content) != row.hash:
            return "content does not match its hash (the entry was altered)"
        anchor = self.anchors.get(row.seq)
        if anchor is not None and anchor != row.hash:
            return "hash differs from the anchor recorded outside the database"
        return None

    def result(self) -> VerifyResult:
        if self.first_bad is None:
            beyond = sorted(s for s in self.anchors if s >= self.expected_seq)
            if beyond:
                self.first_bad = beyond[0]
                self.problem = "anchored but missing from the log (entries were removed)"
        return VerifyResult(
            ok=self.first_bad is None,
            checked=self.checked,
            head_seq=self.expected_seq - 1,
            head_hash=self.prev_hash,
            first_bad=self.first_bad,
            problem=self.problem,
        )


def parse_anchors(values: list[str]) -> dict[int, str]:
    """Anchors given as `<seq>:<64 hex hash>` (the audit_seq/audit_hash of an inventory.* event)."""
    anchors: dict[int, str] = {}
    for v in values:
        seq, sep, h = v.partition(":")
        if not sep or not seq.isdigit() or len(h) != 64:
            raise ValueError("must look like <seq>:<64 hex hash>")
        anchors[int(seq)] = h.lower()
    return anchors
