"""workbench service settings: environment variables with the prefix RETURNFLOW_WORKBENCH_."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from returnflow.settings import ServiceSettings


class WorkbenchSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RETURNFLOW_WORKBENCH_", extra="ignore")

    port: int = 8086

    # The services' public HTTP APIs (`returnflow up` sets each to the service it started).
    returns_url: str = "http://127.0.0.1:8081"
    warehouse_url: str = "http://127.0.0.1:8082"
    refunds_url: str = "http://127.0.0.1:8083"
    notify_url: str = "http://127.0.0.1:8084"
    audit_url: str = "http://127.0.0.1:8085"
    upstream_timeout_s: float = 5.0

    # The workbench's own read token (an `ops` entry of RETURNFLOW_READ_TOKENS): it reads the queues and a
    # return's parts from five services whose readers differ by role, after checking the person's role
    # itself. Every action goes upstream with the person's own token, never this one.
    read_token: SecretStr | None = None
    # Seals each session's upstream token (AES-256-GCM, the key is sha256 of this value). Rotating it
    # signs everyone out.
    session_key: SecretStr | None = None
    # A session ends this long after sign-in (a shift), or at sign-out.
    session_ttl_s: float = 10 * 3600.0
    # The queue page reloads itself this often (meta refresh: works without JavaScript), so a resolved
    # item disappears for everyone within 2 s (a reload takes ~0.1-0.3 s on top of the interval).
    queue_refresh_s: int = 1
    # Everyone asking the same queue page within this long shares one read of the services (reload 1 s +
    # 0.5 s: a resolved item still leaves every screen within 2 s). 0: every page reads.
    queue_cache_s: float = 0.5
    # Items per queue page; and how long a scan must be parked before it needs a person.
    page_size: int = 50
    parked_after_s: float = 86_400.0
    # The team's numbers count days in this time zone (IANA name; the refunds service checks it).
    team_tz: str = "UTC"
