"""Every route of every service runs on the event loop: FastAPI runs a plain `def` endpoint or dependency
in a worker thread, and under the surge that hand-off (a thread woken, the GIL passed back and forth) was
a tenth to a quarter of a service's CPU (py-spy on `make bench`, 2026-12-04). Nothing a route needs blocks,
so every endpoint and dependency is `async def`."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import SecretStr

from apphost.registry import SERVICES, spec_of
from returnflow.service import create_app
from returnflow.settings import Settings


def runs_on_the_loop(call: Any) -> bool:
    method = type(call).__call__ if not inspect.isfunction(call) else None  # an instance with async __call__
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(method)


def threaded(dep: Dependant, where: str) -> list[str]:
    found = [] if dep.call is None or runs_on_the_loop(dep.call) else [f"{where}: {dep.call!r}"]
    for sub in dep.dependencies:
        found += threaded(sub, where)
    return found


def api_routes(routes: list[Any]) -> list[APIRoute]:
    """The app's routes, those of included routers too (FastAPI keeps an included router as one entry)."""
    found: list[APIRoute] = []
    for r in routes:
        if isinstance(r, APIRoute):
            found.append(r)
        elif hasattr(r, "original_router"):
            found += api_routes(r.original_router.routes)
    return found


@pytest.mark.parametrize("name", SERVICES)
def test_no_route_of_the_service_hands_work_to_a_thread(name: str) -> None:
    settings = Settings(
        database_url=SecretStr("postgresql://nowhere/none"), kafka_bootstrap="nowhere:9092", dev_stack=True
    )
    app = create_app(spec_of(name), settings)
    routes = api_routes(app.routes)
    assert routes, "the service has routes"
    found = [x for r in routes for x in threaded(r.dependant, f"{sorted(r.methods)} {r.path}")]
    assert found == []
