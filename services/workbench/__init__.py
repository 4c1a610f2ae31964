"""The workbench: the after-sales team's web app (server-rendered pages, zh-CN and en) — sign-in per
person, one queue of the work that needs a person, a return in one view with its decisions, the returns
team's blind check and warehouse receiving. It calls only the services' public HTTP APIs, each action
with the person's own token; its own schema holds the sessions."""

from __future__ import annotations

from pathlib import Path

from returnflow.service import Runtime, ServiceSpec
from services.workbench import api, handlers
from services.workbench.handlers import WorkbenchContext
from services.workbench.settings import WorkbenchSettings
from services.workbench.upstream import Upstream


async def build_context(rt: Runtime, settings: WorkbenchSettings) -> WorkbenchContext:
    return WorkbenchContext(rt.pool, settings, Upstream(settings), handlers.sealer_for(settings))


async def close_context(ctx: WorkbenchContext) -> None:
    await ctx.upstream.close()


SPEC: ServiceSpec[WorkbenchContext] = ServiceSpec(
    name="workbench",
    folder=Path(__file__).parent,
    description="The after-sales team's web app: sign-in, the queue, a return and its decisions, the "
    "returns team's check, warehouse receiving (HTML pages over the services' public APIs).",
    settings=WorkbenchSettings,
    context=build_context,
    close=close_context,
    router=api.router,
    workers=[handlers.expire_sessions],
)

__all__ = ["SPEC", "WorkbenchContext", "WorkbenchSettings"]
