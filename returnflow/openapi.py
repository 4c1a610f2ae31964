"""The OpenAPI document a service publishes, made to tell the truth: every error documented as RFC 9457
problem details (`application/problem+json`), the errors every route can answer added in one place, and
the webhook signatures declared as security schemes.

Routes declare what is theirs (`responses=problems(401, 404)`, `response_model=`); `truthful_openapi`
adds what the runtime answers on every route: 404 for a path parameter that does not parse, 422 for a
parameter or body that does not validate (or holds a NUL character), 503 while the database is away.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from returnflow.http import PROBLEM_MEDIA_TYPE, Problem
from returnflow.signing import (
    DELIVERY_HEADER,
    SHOPIFY_HMAC_HEADER,
    SHOPIFY_WEBHOOK_ID_HEADER,
    SIGNATURE_HEADER,
    WEBHOOK_SIGNATURE_HEADER,
)

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

# The signed webhooks' schemes (an HMAC of the raw body, checked by the service).
SIGNATURE_SCHEMES: dict[str, dict[str, Any]] = {
    "returnflowSignature": {
        "type": "apiKey",
        "in": "header",
        "name": SIGNATURE_HEADER,
        "description": "t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.<raw body>'> with the source's webhook secret",
    },
    "standardWebhooks": {
        "type": "apiKey",
        "in": "header",
        "name": WEBHOOK_SIGNATURE_HEADER,
        "description": "Standard Webhooks: v1,<base64 HMAC-SHA256 of '<webhook-id>.<webhook-timestamp>.<raw body>'> "
        "with the source's webhook secret (whsec_<base64>: its decoded bytes; else the secret as written)",
    },
    "shopifyHmac": {
        "type": "apiKey",
        "in": "header",
        "name": SHOPIFY_HMAC_HEADER,
        "description": "base64 HMAC-SHA256 of the raw body with the shop's webhook secret (Shopify's scheme)",
    },
    "aftershipHmac": {
        "type": "apiKey",
        "in": "header",
        "name": "aftership-hmac-sha256",
        "description": "base64 HMAC-SHA256 of the raw body with the AfterShip webhook secret (AfterShip's scheme)",
    },
    "twilioSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Twilio-Signature",
        "description": "Twilio's signature of the called URL and form parameters (notify with the twilio provider)",
    },
}

OPS_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/asyncapi.json"})  # no database behind them


def problem(description: str = "", headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_REF}}}
    if headers:
        out["headers"] = headers
    return out


def problems(*statuses: int, **described: str) -> dict[int | str, dict[str, Any]]:
    """`responses=` of a route: each status answered with problem details. A description per status as
    `problems(404, s409="already decided")`, else the status's phrase."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        text = described.get(f"s{status}") or HTTPStatus(status).phrase
        headers = {"WWW-Authenticate": {"schema": {"type": "string"}}} if status == 401 else None
        out[status] = problem(text, headers)
    return out


def signed(scheme: str) -> dict[str, Any]:
    """`openapi_extra` part of a signed webhook: its security scheme."""
    return {"security": [{scheme: []}]}


def delivery_header(name: str = DELIVERY_HEADER, what: str = "the sender's delivery id") -> dict[str, Any]:
    """`openapi_extra` part: a required delivery-id header (read by the route, 400 when missing)."""
    return {
        "parameters": [
            {
                "name": name,
                "in": "header",
                "required": True,
                "description": f"{what}: the same id again is the same delivery (answered, not applied twice)",
                "schema": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": r"\S"},
            }
        ]
    }


SHOPIFY_DELIVERY = {SHOPIFY_WEBHOOK_ID_HEADER: "Shopify's webhook id"}


def truthful_openapi(app: FastAPI) -> dict[str, Any]:
    """app.openapi(): FastAPI's document with the runtime's answers added (cached, as FastAPI's is)."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(
        title=app.title,
        version=app.version,
        openapi_version=app.openapi_version,
        description=app.description,
        routes=app.routes,
    )
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(problem_schema.pop("$defs", {}))
    schemas["Problem"] = problem_schema
    schemes = components.setdefault("securitySchemes", {})
    for path, item in doc.get("paths", {}).items():
        for operation in item.values():
            _add_runtime_answers(path, operation)
            for requirement in operation.get("security", []):
                for name in requirement:
                    if name in SIGNATURE_SCHEMES:
                        schemes[name] = SIGNATURE_SCHEMES[name]
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    app.openapi_schema = doc
    return doc


def _add_runtime_answers(path: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    params = operation.get("parameters", [])
    if any(p.get("in") == "path" for p in params):
        responses.setdefault("404", problem("Not Found (an unknown id, or a path parameter that does not parse)"))
    if params or "requestBody" in operation or "422" in responses:
        # FastAPI's own 422 (HTTPValidationError) is answered as problem details by the runtime
        text = responses.get("422", {}).get("description") or ""
        default = "a parameter or the body is invalid"
        responses["422"] = problem(text if text and text != "Validation Error" else default)
    if operation.get("security"):
        responses.setdefault("401", problems(401)[401])
    if path not in OPS_PATHS:
        retry = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
        responses.setdefault("503", problem("the database is unavailable; nothing was done, retry", retry))
