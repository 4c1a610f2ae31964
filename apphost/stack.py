"""`returnflow up`: embedded PostgreSQL and broker (unless external ones are configured), topics,
migrations, and each service as its own OS process; Ctrl-C stops everything cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import asyncpg
import httpx

from apphost import registry
from apphost.embedded import EmbeddedKafka, EmbeddedPostgres, _die_with_parent, free_port, port_is_free
from returnflow import db
from returnflow.kafka import client_options, create_topics, wait_for_broker
from returnflow.settings import Settings

# The embedded database starts empty and its tables grow to thousands of rows within a minute of load. A statement's
# cached plan, made while its table was empty, scans the table whole until autovacuum analyzes it, and by default
# autovacuum looks once a minute: in `make bench`'s steady phase, a minute after the surge, statements still read
# 28 million rows by sequential scans (audit's sides, warehouse's scans and parcels, ...) inside transactions that
# hold the audit log's and the tracking numbers' locks. A database that has been running (a real deployment) has
# its statistics; this one is given them sooner.
EMBEDDED_POSTGRES_SETTINGS = {"autovacuum_naptime": "5s"}


async def tune_embedded_postgres(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for name, value in EMBEDDED_POSTGRES_SETTINGS.items():
            await conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


class StackError(Exception):
    """A one-line reason the stack cannot start."""


@dataclass
class Child:
    name: str
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None
    restarts: int = 0
    env: dict[str, str] = field(default_factory=dict)  # this child's own settings, over the stack's
    exits: list[datetime] = field(default_factory=list)  # when the supervisor found it dead
    argv: list[str] | None = None  # a helper process (not a service): its command line


@dataclass
class Stack:
    settings: Settings
    services: tuple[str, ...] = registry.SERVICES
    out: Callable[[str], None] = print
    kafka: EmbeddedKafka | None = None
    postgres: EmbeddedPostgres | None = None
    dsn: str = ""
    bootstrap: str = ""
    children: dict[str, Child] = field(default_factory=dict)
    gateway_url: str = ""
    stripe_url: str = ""  # the local Stripe, when the refunds provider is stripe with stripe_local
    shopify_url: str = ""  # the local Shopify Admin API, when the refunds provider is shopify with shopify_local
    _lock: IO[str] | None = None
    _stopping: bool = False

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    # -- start ---------------------------------------------------------------------------------
    def acquire_lock(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / "returnflow.lock"
        f = open(path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid = f.read().strip() or "?"
            f.close()
            raise StackError(
                f"returnflow is already running (pid {pid}) with data dir {self.data_dir.resolve()}"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._lock = f

    def check_ports(self) -> None:
        wanted = [(f"{name} service", registry.port_for(name)) for name in self.services]
        wanted += [
            (f"{name} consumers", own.consumers_port)
            for name in self.services
            if (own := registry.settings_of(name)).consumers_apart and own.consumers_port
        ]
        if not self.settings.kafka_bootstrap:
            wanted.append(("embedded Kafka broker", self.settings.embedded_kafka_port))
        if self.refunds.gateway_sim_port:
            wanted.append(("simulated payment gateway", self.refunds.gateway_sim_port))
        for what, port in wanted:
            if not port_is_free(self.settings.host, port):
                raise StackError(f"port {port} on {self.settings.host} is already in use (needed by the {what})")

    async def start(self) -> None:
        self.acquire_lock()
        self.check_ports()
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        if self.settings.database_url:
            self.dsn = self.settings.database_url.get_secret_value()
        else:
            self.postgres = EmbeddedPostgres(self.data_dir / "postgres")
            await asyncio.to_thread(self.postgres.start)
            self.dsn = self.postgres.uri("returnflow")
            self.out(f"  PostgreSQL   embedded, data in {(self.data_dir / 'postgres').resolve()}")
        await db.ensure_database(self.dsn)
        if self.postgres is not None:
            await tune_embedded_postgres(self.dsn)
        if self.settings.kafka_bootstrap:
            self.bootstrap = self.settings.kafka_bootstrap
        else:
            self.kafka = EmbeddedKafka(self.settings.embedded_kafka_port, self.settings.host, logs / "broker.log")
            await asyncio.to_thread(self.kafka.start)
            self.bootstrap = self.kafka.bootstrap
            self.out(f"  Kafka        embedded (memory only) at {self.bootstrap}")
        await wait_for_broker(self.bootstrap, options=client_options(self.settings))
        created = await create_topics(self.bootstrap, options=client_options(self.settings))
        self.out(f"  topics       {len(created)} created, catalog complete")
        for name in self.services:
            spec = registry.spec_of(name)
            await db.migrate(self.dsn, spec.schema, spec.migrations())
        self.out(f"  migrations   applied for {', '.join(self.services)}")
        self._add_gateway_sim(logs)
        for name in self.services:
            self._add_service(name, logs)
        await self.wait_ready()

    def _add_service(self, name: str, logs: Path) -> None:
        """A service's process; a service whose settings ask for it (`consumers_apart`) runs as two: the web
        half on its port, and its consumer groups in `<name>-consumers`."""
        own = registry.settings_of(name)
        if not own.consumers_apart:
            self.children[name] = Child(name, own.port, logs / f"{name}.log")
            self._spawn(self.children[name])
            return
        self.children[name] = Child(name, own.port, logs / f"{name}.log", env={"RETURNFLOW_ROLE": "web"})
        port = own.consumers_port or free_port(self.settings.host)
        apart = f"{name}-consumers"
        self.children[apart] = Child(
            apart,
            port,
            logs / f"{apart}.log",
            argv=[sys.executable, "-m", "apphost.cli", "serve", name],
            # one process: its consumers scale by partitions and replicas, not uvicorn workers
            env={
                "RETURNFLOW_ROLE": "consumers",
                f"RETURNFLOW_{name.upper()}_PORT": str(port),
                f"RETURNFLOW_{name.upper()}_WORKERS": "1",
            },
        )
        self._spawn(self.children[name])
        self._spawn(self.children[apart])

    def _add_gateway_sim(self, logs: Path) -> None:
        """The refunds service pays through a gateway; unless one is configured, run the simulated
        PSP (services/refunds/dev/gateway_sim.py) as its own process on loopback."""
        s, r = self.settings, self.refunds
        if "refunds" in self.services and r.gateway == "stripe" and r.stripe_local:
            self._add_local_stripe(logs)
            return
        if "refunds" in self.services and r.gateway == "shopify" and r.shopify_local:
            self._add_local_shopify(logs)
            return
        if "refunds" not in self.services or r.gateway != "simulated" or r.gateway_url:
            return
        port = r.gateway_sim_port or free_port(s.host)
        self.gateway_url = f"http://{s.host}:{port}"
        argv = [sys.executable, "-m", "services.refunds.dev.gateway_sim", "--host", s.host, "--port", str(port)]
        self.children["gateway-sim"] = Child("gateway-sim", port, logs / "gateway-sim.log", argv=argv)
        self._spawn(self.children["gateway-sim"])
        self.out(f"  gateway      simulated payment gateway at {self.gateway_url}")

    def _add_local_stripe(self, logs: Path) -> None:
        """`gateway: stripe` with `stripe_local`: the local Stripe (services/refunds/dev/stripe_server.py) as
        its own process, its signed refund webhooks sent to the refunds service."""
        port = free_port(self.settings.host)
        self.gateway_url = self.stripe_url = f"http://{self.settings.host}:{port}"
        hook = f"{registry.base_url_for(self.settings, 'refunds')}/v1/webhooks/stripe/refunds"
        argv = [sys.executable, "-m", "services.refunds.dev.stripe_server", "--host", self.settings.host]
        argv += ["--port", str(port), "--webhook-url", hook]
        self.children["stripe-local"] = Child("stripe-local", port, logs / "stripe-local.log", argv=argv)
        self._spawn(self.children["stripe-local"])
        self.out(f"  gateway      local Stripe at {self.stripe_url} (webhooks to {hook})")

    def _add_local_shopify(self, logs: Path) -> None:
        """`gateway: shopify` with `shopify_local`: the local Shopify Admin GraphQL API
        (services/refunds/dev/shopify_admin.py) as its own process; every order it is asked about exists."""
        port = free_port(self.settings.host)
        self.gateway_url = self.shopify_url = f"http://{self.settings.host}:{port}"
        argv = [sys.executable, "-m", "services.refunds.dev.shopify_admin", "--host", self.settings.host]
        argv += ["--port", str(port)]
        self.children["shopify-local"] = Child("shopify-local", port, logs / "shopify-local.log", argv=argv)
        self._spawn(self.children["shopify-local"])
        self.out(f"  gateway      local Shopify Admin API at {self.shopify_url}")

    @property
    def refunds(self) -> Any:
        return registry.settings_of("refunds")

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.postgres is not None and self.kafka is not None:
            # Everything runs embedded on this machine: the development fixtures (a dev scanner, dev
            # returns-team tokens, the simulator's key) unless the operator set their own, and development
            # secrets are allowed. With an external database or broker every service refuses them.
            env = {**registry.dev_environment(), **env, "RETURNFLOW_DEV_STACK": "true"}
            # every trace recorded to the span files under the data dir, for `returnflow trace RETURN_ID`
            env = {"RETURNFLOW_TRACE_EXPORTER": "file", "RETURNFLOW_TRACE_SAMPLE_RATE": "1.0", **env}
        if "returns" in self.services:
            # the links in texts open the customer's page here, as sent (an ingress in production)
            env.setdefault("RETURNFLOW_PUBLIC_BASE_URL", registry.base_url_for(self.settings, "returns"))
        if "workbench" in self.services:
            for key, url in registry.upstream_urls(self.settings, self.services).items():
                env.setdefault(key, url)
        env["RETURNFLOW_DATABASE_URL"] = self.dsn
        env["RETURNFLOW_KAFKA_BOOTSTRAP"] = self.bootstrap
        if self.gateway_url:
            env["RETURNFLOW_REFUNDS_GATEWAY_URL"] = self.gateway_url
        if self.stripe_url:
            env["RETURNFLOW_REFUNDS_STRIPE_BASE_URL"] = self.stripe_url
        if self.shopify_url:
            env["RETURNFLOW_REFUNDS_SHOPIFY_ADMIN_URL"] = f"{self.shopify_url}/admin/api/2026-01/graphql.json"
        env["RETURNFLOW_LOG_FORMAT"] = env.get("RETURNFLOW_LOG_FORMAT", "json")
        return env

    def _spawn(self, child: Child) -> None:
        child.log_file = open(child.log_path, "ab")
        child.proc = subprocess.Popen(
            child.argv or [sys.executable, "-m", "apphost.cli", "serve", child.name],
            env={**self.child_env(), **child.env},
            stdout=child.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches only us; we stop the children once, in order
            preexec_fn=_die_with_parent,
        )

    async def wait_ready(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        pending = set(self.children)
        async with httpx.AsyncClient(timeout=2.0) as client:
            while pending:
                for name in list(pending):
                    child = self.children[name]
                    assert child.proc is not None
                    if child.proc.poll() is not None:
                        raise StackError(f"{name} exited with status {child.proc.returncode}; see {child.log_path}")
                    with contextlib.suppress(httpx.HTTPError):
                        r = await client.get(f"http://{self.settings.host}:{child.port}/readyz")
                        if r.status_code == 200:
                            pending.discard(name)
                if pending:
                    if time.monotonic() > deadline:
                        raise StackError(f"not ready after {timeout_s:.0f}s: {', '.join(sorted(pending))}")
                    await asyncio.sleep(0.2)

    # -- run -----------------------------------------------------------------------------------
    async def supervise(self, stop: asyncio.Event) -> None:
        """Restart a service process that died (with backoff) until asked to stop."""
        while not stop.is_set():
            for child in self.children.values():
                if child.proc is not None and child.proc.poll() is not None and not self._stopping:
                    child.restarts += 1
                    child.exits.append(datetime.now(UTC))
                    self.out(f"  {child.name} exited ({child.proc.returncode}); restarting (#{child.restarts})")
                    await asyncio.sleep(min(0.2 * child.restarts, 3.0))
                    self._spawn(child)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    # -- fault drills ---------------------------------------------------------------------------
    def kill_service(self, name: str) -> int:
        """kill -9 a service's process group (the supervisor restarts it). Returns the pid killed."""
        child = self.children[name]
        assert child.proc is not None
        pid = child.proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        return pid

    async def restart_broker(self) -> None:
        """Stop and start the embedded broker on the same port: it comes back empty."""
        assert self.kafka is not None, "only the embedded broker can be restarted from here"
        await asyncio.to_thread(self.kafka.stop)
        await asyncio.to_thread(self.kafka.start)
        await wait_for_broker(self.bootstrap, options=client_options(self.settings))
        await create_topics(self.bootstrap, options=client_options(self.settings))

    async def restart_postgres(self) -> None:
        assert self.postgres is not None, "only the embedded PostgreSQL can be restarted from here"
        await asyncio.to_thread(self.postgres.stop)
        await asyncio.to_thread(self.postgres.start)

    # -- stop ----------------------------------------------------------------------------------
    async def stop(self, grace_s: float = 20.0) -> None:
        self._stopping = True
        for child in self.children.values():
            if child.proc and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for child in self.children.values():
            if child.proc is None:
                continue
            try:
                await asyncio.to_thread(child.proc.wait, max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
            if child.log_file:
                child.log_file.close()
        if self.kafka:
            await asyncio.to_thread(self.kafka.stop)
        if self.postgres:
            await asyncio.to_thread(self.postgres.stop)
        if self._lock:
            self._lock.close()
            self._lock = None

    def urls(self) -> list[str]:
        return [f"http://{self.settings.host}:{c.port}" for c in self.children.values()]


async def run_stack(settings: Settings, after_start: Callable[[Stack], Awaitable[Any]] | None = None) -> int:
    stack = Stack(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print("returnflow: starting")
    try:
        await stack.start()
    except StackError:
        await stack.stop()
        raise
    except BaseException:
        await stack.stop()
        raise
    try:
        print("returnflow: ready")
        for name, child in stack.children.items():
            base = f"http://{settings.host}:{child.port}"
            extra = f"{base}/metrics" if child.argv is None else "(simulated PSP)"
            print(f"  {name:<10} {base}/docs   {base}/readyz   {extra}")
        print(f"  logs         {(settings.data_dir / 'logs').resolve()}")
        if after_start is not None:
            await after_start(stack)
        print("returnflow: running — press Ctrl-C to stop")
        await stack.supervise(stop)
    finally:
        print("returnflow: stopping")
        await stack.stop()
        print("returnflow: stopped")
    return 0
