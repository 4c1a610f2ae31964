"""Container health check: `python -m apphost.healthcheck [SERVICE]` exits 0 when the service is ready.

The image's HEALTHCHECK runs it with no argument: the service is then RETURNFLOW_SERVICE or the name after
`serve` in PID 1's command line (`returnflow serve returns`, possibly behind an init such as tini).
It asks /readyz, so "healthy" means the database answered and its migrations are applied (a Kafka outage
does not make a service unhealthy: it keeps accepting into its outbox). Standard library only
(plus the service's settings, for its port), so it stays cheap to run every few seconds.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path


def service_from_cmdline(raw: bytes) -> str | None:
    argv = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    for i, arg in enumerate(argv[:-1]):
        if arg == "serve":
            return argv[i + 1]
    return None


def resolve_service(argv: list[str], proc_cmdline: Path = Path("/proc/1/cmdline")) -> str | None:
    if argv:
        return argv[0]
    if os.environ.get("RETURNFLOW_SERVICE"):
        return os.environ["RETURNFLOW_SERVICE"]
    try:
        return service_from_cmdline(proc_cmdline.read_bytes())
    except OSError:
        return None


def check(service: str, timeout_s: float = 2.5) -> tuple[bool, str]:
    from apphost import registry

    if service not in registry.SERVICES:
        return False, registry.unknown(service)
    port = registry.port_for(service)
    url = f"http://127.0.0.1:{port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status == 200, f"{url} {resp.status}"
    except urllib.error.HTTPError as exc:
        return False, f"{url} {exc.code}"
    except OSError as exc:
        return False, f"{url} {type(exc).__name__}: {exc}"


def main(argv: list[str] | None = None) -> int:
    service = resolve_service(sys.argv[1:] if argv is None else argv)
    if service is None:
        print("healthcheck: no service (pass one, set RETURNFLOW_SERVICE, or run `returnflow serve NAME`)")
        return 1
    ok, detail = check(service)
    print(f"healthcheck {service}: {'ok' if ok else 'not ready'} ({detail})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
