"""The one list of returnflow's services, and what the platform app needs to know of each: its SPEC
(`services/<name>/__init__.py`), its settings (port, workers), and its development fixtures
(`services/<name>/dev/`, imported only from here and the rest of the app)."""

from __future__ import annotations

import json
import os
from importlib import import_module
from types import ModuleType
from typing import Any

from fastapi import FastAPI

from returnflow.service import ServiceSpec, create_app
from returnflow.settings import ServiceSettings, Settings

SERVICES: tuple[str, ...] = ("returns", "warehouse", "refunds", "notify", "audit", "workbench")
# What deploy/ generates and ships: every service, the workbench (a web app over the others' APIs) included.
DEPLOYED: tuple[str, ...] = SERVICES


def unknown(name: str) -> str:
    return f"unknown service {name!r} (known: {', '.join(SERVICES)})"


def spec_of(name: str) -> ServiceSpec[Any]:
    if name not in SERVICES:
        raise KeyError(unknown(name))
    spec: ServiceSpec[Any] = import_module(f"services.{name}").SPEC
    return spec


def specs() -> dict[str, ServiceSpec[Any]]:
    return {name: spec_of(name) for name in SERVICES}


def consumer_groups() -> dict[str, list[str]]:
    """Consumer group (`<service>.<consumer>`) -> the topics it reads, from the services' own specs."""
    return {f"{name}.{c.name}": list(c.topics) for name, spec in specs().items() for c in spec.consumers}


def settings_of(name: str) -> ServiceSettings:
    return spec_of(name).settings.load()


def port_for(name: str) -> int:
    return settings_of(name).port


def workers_for(name: str) -> int:
    return max(1, settings_of(name).workers)


def base_url_for(settings: Settings, name: str) -> str:
    return f"http://{settings.host}:{port_for(name)}"


def upstream_urls(settings: Settings, services: tuple[str, ...] = SERVICES) -> dict[str, str]:
    """The workbench's base URL of each service it calls (RETURNFLOW_WORKBENCH_<NAME>_URL), as started here."""
    return {f"RETURNFLOW_WORKBENCH_{n.upper()}_URL": base_url_for(settings, n) for n in services if n != "workbench"}


def dev_module(name: str) -> ModuleType | None:
    """`services/<name>/dev/`: the service's development fixtures (demo steps, simulators, dev
    identities), or None when it has none."""
    try:
        return import_module(f"services.{name}.dev")
    except ModuleNotFoundError as exc:
        if exc.name != f"services.{name}.dev":
            raise
        return None


DEV_OPS_TOKEN = "dev-read-token-ops"  # development secrets start with `dev-`


def dev_read_tokens() -> dict[str, dict[str, str]]:
    """RETURNFLOW_READ_TOKENS on `returnflow up`: an ops token that reads everything, and each service's
    development people with the role they read with everywhere (`dev.READERS`: the refunds roster as
    agents, audit's people as auditors, the warehouse device as warehouse), so the token `returnflow
    login` saved also reads timelines and reports."""
    tokens = {"ops-dev": {"token": DEV_OPS_TOKEN, "role": "ops"}}
    for name in SERVICES:
        module = dev_module(name)
        tokens.update(getattr(module, "READERS", {}) if module is not None else {})
    return tokens


def dev_environment() -> dict[str, str]:
    """The development settings `returnflow up` gives the services it starts (each service's
    `dev.ENV`, and the development read tokens): fixtures a production deployment never sees."""
    env: dict[str, str] = {"RETURNFLOW_READ_TOKENS": json.dumps(dev_read_tokens())}
    for name in SERVICES:
        module = dev_module(name)
        env.update(getattr(module, "ENV", {}) if module is not None else {})
    return env


def app() -> FastAPI:
    """The uvicorn factory of `returnflow serve NAME` (NAME in RETURNFLOW_SERVICE)."""
    return create_app(spec_of(os.environ["RETURNFLOW_SERVICE"]))
