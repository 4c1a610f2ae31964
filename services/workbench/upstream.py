"""The services' public HTTP APIs, as the workbench calls them: one pooled client, a base URL per service
(WorkbenchSettings.<name>_url), a bearer token per call (the person's own for actions, the workbench's
read token for reads). An unreachable service is an answer (status 0), never an exception on a page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from returnflow.logging import get_logger
from services.workbench.settings import WorkbenchSettings

log = get_logger("workbench.upstream")

SERVICES = ("returns", "warehouse", "refunds", "notify", "audit")


@dataclass(frozen=True)
class Answer:
    status: int  # 0: the service did not answer
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def detail(self) -> str:
        """What a refusal says (problem details' `detail`), for the person."""
        if isinstance(self.body, dict):
            return str(self.body.get("detail") or self.body.get("message") or self.body.get("title") or "")
        return "the service did not answer" if self.status == 0 else f"HTTP {self.status}"

    def bad_fields(self) -> dict[str, str]:
        """Each bad field a refusal names (problem details' `fields`, returnflow/http.py) -> its message."""
        found = self.body.get("fields") if isinstance(self.body, dict) else None
        return {str(e.get("field")): str(e.get("message")) for e in found or [] if isinstance(e, dict)}

    def field_errors(self) -> dict[str, str]:
        """The refusal's message as `form` (always shown) and each bad field it names, under its name."""
        return {"form": self.detail, **self.bad_fields()} if not self.ok else {}


class Upstream:
    def __init__(self, settings: WorkbenchSettings) -> None:
        self.bases = {name: str(getattr(settings, f"{name}_url")).rstrip("/") for name in SERVICES}
        self.client = httpx.AsyncClient(timeout=settings.upstream_timeout_s)

    async def close(self) -> None:
        await self.client.aclose()

    async def call(
        self,
        method: str,
        service: str,
        path: str,
        token: str | None,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        correlation_id: str | None = None,
    ) -> Answer:
        h = dict(headers or {})
        if token:
            h["authorization"] = f"Bearer {token}"
        if correlation_id:
            h["x-correlation-id"] = correlation_id
        if json is not None:
            h["content-type"] = "application/json"
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            r = await self.client.request(
                method,
                self.bases[service] + path,
                params=query,
                content=orjson.dumps(json) if json is not None else None,
                headers=h,
            )
        except httpx.HTTPError as exc:
            log.warning("upstream_unreachable", service=service, path=path, error=type(exc).__name__)
            return Answer(0, None)
        try:
            body = orjson.loads(r.content) if r.content else None
        except orjson.JSONDecodeError:
            body = r.text
        return Answer(r.status_code, body)

    async def get(self, service: str, path: str, token: str | None, **params: Any) -> Answer:
        return await self.call("GET", service, path, token, params=params)
