"""The `returnflow` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from importlib import import_module

from returnflow.settings import get_settings
from services.audit import cli as audit_cli


def _serve(name: str) -> int:
    import uvicorn

    from returnflow.embedded import port_is_free
    from services import SERVICE_MODULES

    if name not in SERVICE_MODULES:
        raise SystemExit(f"returnflow: unknown service {name!r} (known: {', '.join(SERVICE_MODULES)})")
    settings = get_settings()
    port = settings.port_for(name)
    if not port_is_free(settings.host, port):
        raise SystemExit(f"returnflow: port {port} on {settings.host} is already in use ({name})")
    import_module(SERVICE_MODULES[name])  # fail here, in one line, if the service cannot load
    uvicorn.run(
        f"{SERVICE_MODULES[name]}:app",
        factory=True,
        workers=settings.workers_for(name),
        host=settings.host,
        port=port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        server_header=False,
        lifespan="on",
        timeout_graceful_shutdown=15,
    )
    return 0


def _up(demo: bool) -> int:
    from returnflow.stack import StackError, run_stack

    after = None
    if demo:
        from returnflow.demo import run_demo

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

    from contracts.docs import update_readme
    from returnflow.specs import write_docs

    status = _contracts_export(check=False)
    changed = update_readme(Path("README.md"))
    print("README.md topic table " + ("updated" if changed else "up to date"))
    for path in write_docs():
        print(f"wrote {path}")
    return status


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
    sub.add_parser("docs", help="regenerate the generated parts of README.md and contracts/schemas")
    from returnflow import ops

    ops.register(sub)
    args = parser.parse_args(argv)
    # The CLI speaks in one-line errors of its own; client libraries' connection chatter stays out.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        handled = ops.run(args, get_settings())
        if handled is not None:
            return handled
        if args.cmd == "up":
            return _up(args.demo)
        if args.cmd == "serve":
            return _serve(args.service)
        if args.cmd == "contracts":
            return _contracts_export(check=args.action == "check")
        if args.cmd == "audit":
            return audit_cli.run(args)
        if args.cmd == "docs":
            return _docs()
    except KeyboardInterrupt:
        return 130
    except ops.OpsError as exc:
        print(f"returnflow: {exc}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
