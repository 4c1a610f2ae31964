"""The `returnflow` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from apphost import audit_cli
from returnflow.settings import get_settings


def _serve(name: str) -> int:
    import os

    from apphost import registry
    from apphost.embedded import port_is_free

    if name not in registry.SERVICES:
        raise SystemExit(f"returnflow: {registry.unknown(name)}")
    settings = get_settings()
    registry.spec_of(name)  # fail here, in one line, if the service cannot load
    port = registry.port_for(name)
    if not port_is_free(settings.host, port):
        raise SystemExit(f"returnflow: port {port} on {settings.host} is already in use ({name})")
    workers = registry.workers_for(name)
    os.environ["RETURNFLOW_SERVICE"] = name
    if workers > 1:
        # Every worker writes its metrics to files here; /metrics adds them up.
        import shutil

        # (each half of a split service its own: one half starting must not clear the other's files)
        metrics_dir = settings.data_dir / "metrics" / (name if settings.role == "all" else f"{name}-{settings.role}")
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir.resolve())
    run_uvicorn("apphost.registry:app", settings.host, port, workers)
    return 0


def run_uvicorn(factory: str, host: str, port: int, workers: int = 1) -> None:
    """Serve an app factory ("module:function") the way every service is served."""
    import uvicorn

    uvicorn.run(
        factory,
        factory=True,
        workers=workers,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        server_header=False,
        lifespan="on",
        timeout_graceful_shutdown=15,
    )


def _up(demo: bool) -> int:
    from apphost.stack import StackError, run_stack

    after = None
    if demo:
        from apphost.demo import run_demo

        after = run_demo
    try:
        return asyncio.run(run_stack(get_settings(), after))
    except StackError as exc:
        print(f"returnflow: {exc}", file=sys.stderr)
        return 1


def _contracts_export(check: bool) -> int:
    from contracts.export import export_schemas

    problems = export_schemas(check=check)
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


def _docs() -> int:
    from pathlib import Path

    from apphost.docs import write_docs
    from contracts.docs import update_readme

    status = _contracts_export(check=False)
    changed = update_readme(Path("README.md"))
    print("README.md topic table " + ("updated" if changed else "up to date"))
    for path in write_docs():
        print(f"wrote {path}")
    return status


def config_lines() -> list[str]:
    """Every setting as the variable that sets it, with its effective value; secrets are redacted, and
    development secrets are marked."""
    from pydantic import SecretStr
    from pydantic_settings import BaseSettings

    from apphost import registry
    from returnflow.settings import Settings, development_secrets

    def shown(value: object) -> str:
        if isinstance(value, SecretStr):
            return "**********"
        if isinstance(value, dict | list):
            import json

            return json.dumps(value, default=lambda v: shown(v) if isinstance(v, SecretStr) else str(v))
        return "" if value is None else str(value)

    def lines(settings: BaseSettings) -> list[str]:
        prefix = str(settings.model_config.get("env_prefix", ""))
        dev = {d.split(" ")[0] for d in development_secrets(settings)}
        out = []
        for name in type(settings).model_fields:
            var = f"{prefix}{name.upper()}"
            value = getattr(settings, name)
            dumped = value.model_dump() if hasattr(value, "model_dump") else value
            if isinstance(dumped, dict):
                dumped = {k: (v.model_dump() if hasattr(v, "model_dump") else v) for k, v in dumped.items()}
            out.append(f"{var}={shown(dumped)}" + ("   # development secret" if var in dev else ""))
        return out

    out = ["# runtime (every service)", *lines(Settings.load())]
    for name in registry.SERVICES:
        out += ["", f"# {name}", *lines(registry.settings_of(name))]
    return out


def _config() -> int:
    print("\n".join(config_lines()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="returnflow", description="returnflow after-sales platform")
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the whole platform (embedded broker and database by default)")
    up.add_argument("--demo", action="store_true", help="play a short demo once everything is ready")
    serve = sub.add_parser("serve", help="run one service in this process")
    serve.add_argument("service")
    contracts = sub.add_parser("contracts", help="JSON Schemas of the contracts")
    contracts.add_argument("action", choices=["export", "check"])
    audit_cli.register(sub)
    roster = sub.add_parser("roster", help="refund authority roster: who may decide refunds, with which role")
    roster.add_argument("action", nargs="?", choices=["list", "seed"], default="list")
    roster.add_argument("file", nargs="?", help="JSON list of {actor_id, role, name, token}; default: dev roster")
    sub.add_parser("docs", help="regenerate the generated parts of README.md and contracts/schemas")
    sub.add_parser("config", help="the effective settings of the runtime and every service, secrets redacted")
    from apphost import decisions_cli, links_cli, ops, queue_cli, replacement_cli, reports, trace_cli

    ops.register(sub)
    decisions_cli.register(sub)
    queue_cli.register(sub)
    links_cli.register(sub)
    replacement_cli.register(sub)
    reports.register(sub)
    trace_cli.register(sub)
    _register_deploy_commands(sub)
    args = parser.parse_args(argv)
    # The CLI speaks in one-line errors of its own; client libraries' connection chatter stays out.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        if args.cmd == "report":
            return reports.run(args, get_settings())
        handled = _run_deploy_command(args)
        if handled is None:
            handled = trace_cli.run(args, get_settings())
        if handled is None:
            handled = ops.run(args, get_settings())
        if handled is None:
            handled = decisions_cli.run(args, get_settings())
        if handled is None:
            handled = queue_cli.run(args, get_settings())
        if handled is None:
            handled = links_cli.run(args, get_settings())
        if handled is None:
            handled = replacement_cli.run(args, get_settings())
        if handled is not None:
            return handled
        if args.cmd == "up":
            return _up(args.demo)
        if args.cmd == "serve":
            return _serve(args.service)
        if args.cmd == "contracts":
            return _contracts_export(check=args.action == "check")
        if args.cmd == "roster":
            from apphost.roster_cli import list_cmd, seed_cmd

            if args.action == "list":
                return list_cmd(get_settings())
            return seed_cmd(get_settings(), args.file)
        if args.cmd == "audit":
            return audit_cli.run(args)
        if args.cmd == "docs":
            return _docs()
        if args.cmd == "config":
            return _config()
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `returnflow dlq list | head`: the reader left. Quietly, and with nothing more written to the pipe
        # (Python would otherwise complain again when it flushes stdout at exit).
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ops.OpsError, decisions_cli.CliError) as exc:
        print(f"returnflow: {exc}", file=sys.stderr)
        return 1
    return 2


# --- deploy commands (deploy/: compose's one-shot jobs, Kubernetes init containers) -----------------------
# `returnflow topics create` and `returnflow migrate`. Kept in this block so other edits to this file do
# not collide with it; `topics` itself (list / --describe) belongs to apphost/ops.py.


def _register_deploy_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    topics = sub.choices["topics"]
    topics.add_argument(
        "action", nargs="?", choices=["list", "create"], default="list", help="create: every catalog topic and DLQ"
    )
    topics.add_argument("--replication-factor", type=int, default=1, help="create: copies of each partition")
    topics.add_argument("--min-insync-replicas", type=int, help="create: replicas in sync for an acks=all write")
    topics.add_argument("--wait", type=float, default=60.0, help="create: seconds to wait for the broker")
    topics.add_argument("--dry-run", action="store_true", help="create: print the plan, touch nothing")
    migrate = sub.add_parser("migrate", help="apply the database migrations of the given services (default: all)")
    migrate.add_argument("services", nargs="*")


def _run_deploy_command(args: argparse.Namespace) -> int | None:
    if args.cmd == "topics" and args.action == "create":
        return _topics_create(args.replication_factor, args.min_insync_replicas, args.wait, args.dry_run)
    if args.cmd == "migrate":
        return asyncio.run(_migrate(args.services))
    return None


def _topics_create(replicas: int, min_insync: int | None, wait_s: float, dry_run: bool) -> int:
    from apphost.deploygen import topic_plan
    from returnflow.kafka import client_options, create_topics, security_problem, wait_for_broker

    plan = topic_plan(replicas, min_insync)
    if dry_run:
        for t in plan:
            config = " ".join(f"{k}={v}" for k, v in sorted(t.config.items()))
            print(f"{t.name}\tpartitions={t.partitions}\treplicas={t.replicas}\t{config}")
        return 0
    settings = get_settings()
    bootstrap = settings.kafka_bootstrap
    if not bootstrap:
        print("returnflow: topics create needs RETURNFLOW_KAFKA_BOOTSTRAP", file=sys.stderr)
        return 1
    if problem := security_problem(settings):
        print(f"returnflow: {problem}", file=sys.stderr)
        return 1
    options = client_options(settings)

    async def run() -> list[str]:
        await wait_for_broker(bootstrap, timeout_s=wait_s, options=options)
        return await create_topics(
            bootstrap,
            [(t.name, t.partitions) for t in plan],
            replication_factor=replicas,
            configs={t.name: t.config for t in plan},
            options=options,
        )

    try:
        created = asyncio.run(run())
    except Exception as exc:
        print(f"returnflow: topics create failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"topics: {len(created)} created, {len(plan) - len(created)} already there ({len(plan)} in the catalog)")
    return 0


async def _migrate(names: list[str]) -> int:
    from apphost import registry
    from returnflow import db

    settings = get_settings()
    if settings.database_url is None:
        print("returnflow: migrate needs RETURNFLOW_DATABASE_URL", file=sys.stderr)
        return 1
    unknown = [n for n in names if n not in registry.SERVICES]
    if unknown:
        print(f"returnflow: {registry.unknown(unknown[0])}", file=sys.stderr)
        return 1
    dsn = settings.database_url.get_secret_value()
    for name in names or list(registry.SERVICES):
        spec = registry.spec_of(name)
        try:
            applied = await db.migrate(dsn, spec.schema, spec.migrations())
        except Exception as exc:
            print(f"returnflow: migrate {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        print(f"{name}: " + (", ".join(applied) + " applied" if applied else "up to date"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
