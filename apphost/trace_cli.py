"""`returnflow trace RETURN_ID`: one return's spans as a waterfall in the terminal.

Reads the span files the services write with the file exporter (RETURNFLOW_TRACE_EXPORTER=file, what
`returnflow up` uses: JSON lines under <data dir>/traces). A return's spans are every span of every trace
that touched it (a span carries the return id; the request that started the trace is found by its trace
id): the webhook, the outbox relay, each consumer, the refund decision and payment, the SMS.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson

from returnflow.settings import Settings
from returnflow.tracing import ATTR_RETURN_ID, trace_dir

Span = dict[str, Any]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("trace", help="one return's spans as a waterfall (from the span files of the local stack)")
    p.add_argument("return_id")
    p.add_argument(
        "--dir", type=Path, help="the span files' folder (default: RETURNFLOW_TRACE_DIR or <data dir>/traces)"
    )
    p.add_argument("--width", type=int, default=40, help="the bar's width in characters")


def run(args: argparse.Namespace, settings: Settings) -> int | None:
    if args.cmd != "trace":
        return None
    return trace_command(args.return_id, args.dir or trace_dir(settings), args.width)


def load_spans(directory: Path) -> list[Span]:
    """Every span in the folder's *.jsonl files (a line cut short by a process still writing is skipped)."""
    spans: list[Span] = []
    for path in sorted(directory.glob("*.jsonl")):
        with path.open("rb") as f:
            for line in f:
                try:
                    span = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(span, dict) and {"trace_id", "span_id", "start_ns", "end_ns"} <= span.keys():
                    spans.append(span)
    return spans


def spans_of_return(spans: Iterable[Span], return_id: str) -> list[Span]:
    """The spans of every trace in which some span names the return, ordered by start."""
    spans = list(spans)
    traces = {s["trace_id"] for s in spans if (s.get("attributes") or {}).get(ATTR_RETURN_ID) == return_id}
    return sorted((s for s in spans if s["trace_id"] in traces), key=lambda s: (s["start_ns"], s["end_ns"]))


def _depth(span: Span, by_id: dict[str, Span]) -> int:
    depth, seen = 0, {span["span_id"]}
    parent = by_id.get(span.get("parent_id") or "")
    while parent is not None and parent["span_id"] not in seen:
        seen.add(parent["span_id"])
        depth += 1
        parent = by_id.get(parent.get("parent_id") or "")
    return depth


def waterfall(spans: list[Span], width: int = 40) -> list[str]:
    """One line per span: trace, start offset and duration (ms), service, name (indented under its parent),
    and a bar placed on the time from the first span's start to the last one's end."""
    if not spans:
        return []
    t0 = min(s["start_ns"] for s in spans)
    total = max(max(s["end_ns"] for s in spans) - t0, 1)
    by_id = {s["span_id"]: s for s in spans}
    width = max(width, 10)
    lines = [f"{'trace':8}  {'start ms':>9}  {'dur ms':>8}  {'service':10}  {'span':44}  timeline"]
    for s in spans:
        start, end = s["start_ns"] - t0, s["end_ns"] - t0
        left = min(int(start / total * width), width - 1)
        length = max(1, round((end - start) / total * width))
        bar = " " * left + "█" * min(length, width - left)
        name = "  " * _depth(s, by_id) + s["name"] + (" !" if s.get("status") == "ERROR" else "")
        service = str(s.get("service") or "")
        lines.append(
            f"{s['trace_id'][:8]}  {start / 1e6:9.1f}  {(end - start) / 1e6:8.1f}  {service:10.10}  "
            f"{name:44.44}  |{bar:<{width}}|"
        )
    return lines


def trace_command(return_id: str, directory: Path, width: int = 40, out: Callable[[str], None] = print) -> int:
    if not directory.is_dir():
        print(f"returnflow: no span files in {directory} (RETURNFLOW_TRACE_EXPORTER=file writes them)", file=sys.stderr)
        return 1
    spans = spans_of_return(load_spans(directory), return_id)
    if not spans:
        print(
            f"returnflow: no spans of return {return_id} in {directory} (not sampled, or not exported yet)",
            file=sys.stderr,
        )
        return 1
    traces = sorted({s["trace_id"] for s in spans})
    out(f"return {return_id}: {len(spans)} spans in {len(traces)} trace(s): {', '.join(traces)}")
    for line in waterfall(spans, width):
        out(line)
    return 0
