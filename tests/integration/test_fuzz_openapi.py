"""Every HTTP API fuzzed with schemathesis from its live OpenAPI spec, with all of schemathesis' checks:
generated valid and invalid requests (signed and authenticated, so they reach validation and the
handlers) never get a 5xx, invalid input is never accepted, and every answer is documented — its status,
its content type and its body's schema (errors as problem details). Bounded: a few examples per
operation and generation mode."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import uuid
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis.errors import Unsatisfiable
from pydantic import SecretStr
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.parameters import ParameterLocation

from returnflow.settings import ReadToken, Settings
from returnflow.signing import DELIVERY_HEADER, SIGNATURE_HEADER, sign
from services.audit import SPEC as AUDIT
from services.audit.settings import AuditSettings
from services.notify import SPEC as NOTIFY
from services.refunds import SPEC as REFUNDS
from services.refunds import repository as refunds_repository
from services.refunds.dev import DEV_ROSTER
from services.refunds.dev.gateway_sim import serve_gateway
from services.refunds.settings import RefundsSettings
from services.returns import SPEC as RETURNS
from services.warehouse import SPEC as WAREHOUSE
from services.warehouse.settings import WarehouseDevice, WarehouseSettings

pytestmark = [
    pytest.mark.timeout(300),
    # schemathesis draws with `random` inside its strategies (its business, not ours)
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]

MAX_EXAMPLES = 6
PLUMBING = {"/healthz", "/readyz", "/metrics", "/asyncapi.json"}  # no input to fuzz
SECRETS = {"generic": "fuzz-generic", "carriers": "fuzz-carriers", "sms": "fuzz-sms"}
DEVICE_TOKEN = "fuzz-device-token"
KUAIDI100_SALT, AFTERSHIP_SECRET = "fuzz-kuaidi100-salt", "fuzz-aftership-secret"
AUDIT_TOKEN = "fuzz-audit-token"
REFUNDS_TOKEN = next(e.token for e in DEV_ROSTER if e.role == "supervisor")
OPS_TOKEN = "fuzz-ops-reader-token"
# Every answer is checked against the document; negative cases must be refused.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def fuzz_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "webhook_secrets": {k: [SecretStr(v)] for k, v in SECRETS.items()},
            "read_tokens": {"ops-fuzz": ReadToken(token=SecretStr(OPS_TOKEN), role="ops")},
        }
    )


class Credentials(requests.auth.AuthBase):
    """What a legitimate caller adds: a bearer token, and an HMAC signature of the exact body sent."""

    def __init__(self, token: str | None, secret: str | None) -> None:
        self.token, self.secret = token, secret

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        if self.token:
            r.headers["Authorization"] = f"Bearer {self.token}"
        if "/couriers/" in (r.url or ""):
            return sign_courier_push(r)
        if self.secret:
            body = r.body or b""
            r.headers[SIGNATURE_HEADER] = sign(self.secret.encode(), body if isinstance(body, bytes) else body.encode())
            r.headers[DELIVERY_HEADER] = str(uuid.uuid4())
        return r


def sign_courier_push(r: requests.PreparedRequest) -> requests.PreparedRequest:
    """What Kuaidi100 (sign = MD5(param + salt) in the form) and AfterShip (an HMAC header) add."""
    body = r.body or b""
    raw = body if isinstance(body, bytes) else body.encode()
    if "kuaidi100" in (r.url or ""):
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            form = parse_qs(raw.decode(), keep_blank_values=True)
            if len(form.get("param", [])) == 1:
                form["sign"] = [hashlib.md5((form["param"][0] + KUAIDI100_SALT).encode()).hexdigest().upper()]
                r.prepare_body(data={k: v[0] if len(v) == 1 else v for k, v in form.items()}, files=None)
        return r
    digest = hmac.new(AFTERSHIP_SECRET.encode(), raw, hashlib.sha256).digest()
    r.headers["aftership-hmac-sha256"] = base64.b64encode(digest).decode()
    return r


def credentials(service: str, path: str) -> Credentials:
    if service == "returns":
        return Credentials(OPS_TOKEN, SECRETS["generic"])
    if service == "warehouse":
        return Credentials(DEVICE_TOKEN, SECRETS["carriers"] if "/webhooks/" in path else None)
    if service == "notify":
        return Credentials(OPS_TOKEN, SECRETS["sms"])
    return Credentials(AUDIT_TOKEN if service == "audit" else REFUNDS_TOKEN, None)


def negates_headers(case: Any) -> bool:
    meta = case.meta
    header = meta.components.get(ParameterLocation.HEADER) if meta is not None else None
    return header is not None and header.mode is GenerationMode.NEGATIVE


def fuzz_test(strategy: Any, base_url: str, session: requests.Session, checks: list[Any], counter: list[int]) -> Any:
    """A bounded hypothesis test: each generated request is sent and checked."""
    bare = requests.Session()

    @given(case=strategy)
    @hsettings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        counter[0] += 1
        # A case whose headers were made invalid (a bearer token's Authorization removed or garbled) goes
        # out as generated: our credentials would repair it, and a repaired request is rightly accepted.
        response = case.call(base_url=base_url, session=bare if negates_headers(case) else session, timeout=10)
        case.validate_response(response, checks=checks)

    return run


def fuzz(service: str, openapi: dict[str, Any], base_url: str) -> tuple[list[str], int]:
    """Run every operation in both generation modes; (failures, requests sent)."""
    schema = schemathesis.openapi.from_dict(openapi)
    failures: list[str] = []
    counter = [0]
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path in PLUMBING:
            continue
        session = requests.Session()
        session.auth = credentials(service, op.path)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            checks = CHECKS + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])

            run = fuzz_test(op.as_strategy(generation_mode=mode), base_url, session, checks, counter)
            try:
                run()
            except Unsatisfiable:  # nothing in this operation can be made invalid (a bare path, no body)
                continue
            except Exception as exc:  # one line per failing operation and mode
                failures.append(f"{service} {op.method.upper()} {op.path} [{mode.value}]: {str(exc)[:600]}")
    return failures, counter[0]


async def test_every_api_survives_fuzzing(settings, service_runner):
    async with contextlib.AsyncExitStack() as stack:
        s = fuzz_settings(settings)
        own: dict[str, Any] = {
            AUDIT.name: AuditSettings(tokens={"rt-fuzz": SecretStr(AUDIT_TOKEN)}),
            REFUNDS.name: RefundsSettings(gateway_url=await stack.enter_async_context(serve_gateway())),
            WAREHOUSE.name: WarehouseSettings(
                devices={"dock-fuzz": WarehouseDevice(warehouse_id="WH-FUZZ", token=SecretStr(DEVICE_TOKEN))},
                kuaidi100_salts=[SecretStr(KUAIDI100_SALT)],
                aftership_webhook_secrets=[SecretStr(AFTERSHIP_SECRET)],
            ),
        }
        running = {
            spec.name: await stack.enter_async_context(service_runner(spec, s, own.get(spec.name)))
            for spec in (RETURNS, WAREHOUSE, REFUNDS, NOTIFY, AUDIT)
        }
        async with running["refunds"].runtime.pool.acquire() as conn:
            await refunds_repository.seed_roster(conn, list(DEV_ROSTER))
        failures: list[str] = []
        sent = 0
        for name, svc in running.items():
            found, n = await asyncio.to_thread(fuzz, name, svc.app.openapi(), svc.base_url)
            failures += found
            sent += n
    assert failures == [], "\n".join(failures)
    assert sent > 100  # the generators really ran
