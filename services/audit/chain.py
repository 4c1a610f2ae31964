"""The audit log's hash chain: canonical content, entry hashes and verification. Pure, no I/O.

Each entry's `content` is the canonical JSON (keys sorted, no whitespace, UTF-8) of
`{"seq", "type", "recorded_at", "return_id", "sku", "data"}`, and

    hash = sha256(prev_hash + "\\n" + content)   (hex; prev_hash of entry 1 is 64 zeros)

`ChainVerifier` is fed the stored rows in sequence order and reports the first entry that does not
match: a gap in the sequence, a prev_hash that is not the previous entry's hash, columns that differ
from the hashed content, content that does not match its hash, or a hash that differs from an
anchor recorded elsewhere. Anchors come from `audit.anchored` (the topic audit.anchors and the anchors
file: the head and the hash of every entry appended since the previous anchor) and from any
inventory.verified / inventory.discrepancy event (the sequence number and hash of its entry). The
internal checks catch an edit made without recomputing; only anchors catch a superuser who rewrote
an entry and recomputed every later hash, and the first anchored entry that differs is named.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
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
    origins: Mapping[int, str] = field(default_factory=dict)  # where each anchor was read, for the report
    checked: int = 0
    last_anchored: int = 0  # the last entry whose anchor matched
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
        if row.seq in self.anchors:
            self.last_anchored = row.seq
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
            return self._rewritten(row, anchor)
        return None

    def _rewritten(self, row: Row, anchor: str) -> str:
        """The entry's hash is not the one anchored outside the database, though the chain is consistent:
        the log was rewritten and the later hashes recomputed."""
        where = self.origins.get(row.seq, "an anchor recorded outside the database")
        differs = f"hash {row.hash[:16]}… differs from {anchor[:16]}… anchored in {where}"
        if row.seq == 1 or self.last_anchored == row.seq - 1:
            return (
                f"{differs}: this entry was rewritten (its {row.type} content or time is not what was "
                "anchored; the entry before it still matches) and every later hash recomputed"
            )
        return (
            f"{differs}: rewritten, here or in an earlier entry not anchored one by one (after entry "
            f"{self.last_anchored}, which matches its anchor), and every later hash recomputed"
        )

    def result(self) -> VerifyResult:
        if self.first_bad is None:
            beyond = sorted(s for s in self.anchors if s >= self.expected_seq)
            if beyond:
                self.first_bad = beyond[0]
                where = self.origins.get(beyond[0], "outside the database")
                self.problem = f"anchored in {where} but missing from the log (entries were removed)"
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


@dataclass(frozen=True)
class Published:
    """An `audit.anchored` as read back from where it was shipped (topic or file)."""

    seq: int
    hash: str
    hashes: list[str]
    at: str
    origin: str  # e.g. "audit.anchors offset 12", "anchors.jsonl line 3"


@dataclass
class Anchors:
    """Anchors by sequence number. The first published hash of an entry wins: a later anchor can only
    repeat it, unless the log was rewritten in between (then the later one carries the rewrite)."""

    hashes: dict[int, str] = field(default_factory=dict)
    origins: dict[int, str] = field(default_factory=dict)
    published: int = 0
    head_seq: int = 0
    head_at: str | None = None

    def add(self, seq: int, h: str, origin: str) -> None:
        if seq > 0 and seq not in self.hashes:
            self.hashes[seq] = h.lower()
            self.origins[seq] = origin

    def add_published(self, items: Iterable[Published]) -> None:
        for p in items:
            self.published += 1
            first = p.seq - len(p.hashes) + 1
            for i, h in enumerate(p.hashes):
                self.add(first + i, h, f"{p.origin} ({p.at})")
            self.add(p.seq, p.hash, f"{p.origin} ({p.at})")
            if p.seq >= self.head_seq:
                self.head_seq, self.head_at = p.seq, p.at
