"""audit service settings: environment variables with the prefix RETURNFLOW_AUDIT_."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from returnflow.commands import KeyFormatError, public_key_from_text
from returnflow.settings import ServiceSettings


class AuditSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RETURNFLOW_AUDIT_", extra="ignore")

    port: int = 8085
    # The inventory consumer gathers (ServiceSettings.consumer_fetch_*): fewer, larger batches take the log's
    # lock fewer times (measured at 41 returns/s: receipt -> verified p99 877 -> 831 ms, CPU per lifecycle -2 %).
    consumer_fetch_min_bytes: int = 64 * 1024
    consumer_fetch_max_wait_ms: int | None = 300
    # ... and so does its relay (inventory.verified, discrepancies, anchors), like notify's.
    relay_gather_ms: int = 100

    # Audit (dual-check inventory log). Both sides of a movement must be attested within the deadline
    # of each other; a side is declared missing only after it has also been held `settle_s` (so a
    # counterpart queued behind it after downtime can still arrive); an attestation for a return not
    # yet seen waits `unknown_return_grace_s` for its return.requested.
    check_deadline_s: float = 86_400.0
    settle_s: float = 60.0
    unknown_return_grace_s: float = 600.0
    sweep_interval_s: float = 15.0
    sweep_batch: int = 500
    checks_batch_max: int = 100
    # Anchors: the log's chain head published outside PostgreSQL (topic audit.anchors, through the outbox)
    # after every transaction that appended entries, and every `anchor_interval_s` when nothing did (one
    # message a minute idle; under load one per batch, ~1 row per consumer batch of up to hundreds of
    # entries). Each anchor lists the hashes of the entries appended since the previous one, at most
    # `anchor_max_hashes` (2,000 hashes: ~140 KB, under Kafka's default 1 MB message limit).
    anchor_interval_s: float = 60.0
    anchor_max_hashes: int = 2000
    # Each anchor is also appended as one JSON line here, for shipping to a third place (a WORM bucket, a
    # separate log system): a file path, "-" for stdout, "off" for none; empty: <data_dir>/audit/anchors.jsonl.
    anchor_file: str = ""
    # person id -> bearer token: who may post returns-team checks and resolve discrepancies.
    tokens: dict[str, SecretStr] = Field(default_factory=dict)
    # person id -> Ed25519 public key (base64 of 32 bytes): checks the signature of the returns-team
    # checks they put on inventory.checks; a check from anyone else is refused, never recorded as a side.
    public_keys: dict[str, str] = Field(default_factory=dict)

    @field_validator("public_keys")
    @classmethod
    def _public_keys(cls, v: dict[str, str]) -> dict[str, str]:
        for person, key in v.items():
            try:
                public_key_from_text(key)
            except KeyFormatError as exc:
                raise ValueError(f"{person}: {exc}") from None
        return v
