"""Small HTTP helpers shared by the services' FastAPI routes."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from returnflow.settings import ReadRole
from returnflow.signing import (
    SHOPIFY_HMAC_HEADER,
    SIGNATURE_HEADER,
    SignatureError,
    shopify_verify,
    standard_keys,
    standard_verify,
    verify,
)

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body, default=str), status_code=status, media_type="application/json")


# -- the one error format: RFC 9457 problem details ------------------------------------------------------

PROBLEM_MEDIA_TYPE = "application/problem+json"


class ProblemField(BaseModel):
    field: str = Field(description="where: a dotted path in the body (`lines.0.qty`), a parameter or header name")
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details, the body of every error of every service. `fields` (an extension member)
    names each bad field; a few answers carry another extension member (e.g. the `recorded` check)."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "example": {
                "type": "about:blank",
                "title": "Unprocessable Content",
                "status": 422,
                "detail": "validation failed",
                "fields": [{"field": "lines.0.qty", "message": "Input should be greater than 0"}],
            }
        },
    )
    type: str = Field(default="about:blank", description="a URI naming the problem type (about:blank: see status)")
    title: str = Field(description="the status's phrase")
    status: int = Field(ge=400, le=599)
    detail: str = Field(description="what went wrong with this request, for a person")
    fields: list[ProblemField] = Field(default_factory=list, description="each bad field (absent when none)")


def title_of(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_body(status: int, detail: str, fields: list[dict[str, str]] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "about:blank", "title": title_of(status), "status": status, "detail": detail}
    if fields is not None:
        body["fields"] = fields
    return {**extra, **body}


def problem_json(
    status: int,
    detail: str,
    fields: list[dict[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    response = Response(
        orjson.dumps(problem_body(status, detail, fields, **extra), default=str),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
    )
    response.headers.update(headers or {})
    return response


def error(status: int, message: str, fields: list[dict[str, str]] | None = None, **extra: Any) -> Response:
    """A route's error answer: problem details with `message` as the detail (extension members in extra)."""
    return problem_json(status, message, fields, **extra)


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body (signatures are over raw bytes), refusing more than `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def is_json(request: Request) -> bool:
    ctype = request.headers.get("content-type", "")
    return ctype.split(";")[0].strip().lower() in ("application/json", "application/cloudevents+json") or (
        ctype.split(";")[0].strip().lower().endswith("+json")
    )


def correlation_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("correlation_id") or "")


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema with its local `$defs` references inlined (our models have no cycles)."""
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node and node["$ref"].startswith("#/$defs/"):
                return walk(defs[node["$ref"].removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    out: dict[str, Any] = walk(schema)
    return out


def json_body(model: Any, example: Any = None) -> dict[str, Any]:
    """`openapi_extra` for a route that reads its raw body (for signatures) but takes this JSON model."""
    media: dict[str, Any] = {"schema": inline_refs(model.model_json_schema())}
    if example is not None:
        media["example"] = example
    return {"requestBody": {"required": True, "content": {"application/json": media}}}


class HttpProblem(Exception):
    """Raised by a route: answered as problem details (`detail` = message, `fields` = [...]) with `status`."""

    def __init__(
        self,
        status: int,
        message: str,
        fields: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = fields
        self.headers = headers
        self.extra = extra


_FIELD_PREFIX = re.compile(r"^([A-Za-z_][\w.]*): (.+)$", re.S)


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    """Pydantic errors as [{field, message}] with dotted paths (`lines.0.qty`). A model-level validator
    names its field by starting its message with `field: ` (e.g. `lines: worth more than paid_total`)."""
    out = []
    for e in exc.errors(include_url=False):
        msg = e["msg"].removeprefix("Value error, ")
        loc = [str(p) for p in e["loc"] if not str(p).startswith("function-")]
        field = ".".join(loc)
        m = _FIELD_PREFIX.match(msg)
        if m:
            field = ".".join([*loc, m.group(1)]) if loc else m.group(1)
            msg = m.group(2)
        out.append({"field": field or "body", "message": msg})
    return out


NUL_MESSAGE = "must not contain a NUL character"


def _nul_paths(node: Any, path: str = "") -> list[str]:
    if isinstance(node, str):
        return [path or "body"] if "\x00" in node else []
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _nul_paths(v, f"{path}.{k}" if path else str(k))]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _nul_paths(v, f"{path}.{i}" if path else str(i))]
    return []


def refuse_nul_in_json(raw: bytes) -> None:
    """PostgreSQL stores no NUL character in text: a 422 naming each field that holds one, instead of
    a 500 from the database."""
    if b"\\u0000" not in raw:
        return
    try:
        paths = _nul_paths(orjson.loads(raw))
    except orjson.JSONDecodeError:
        return
    if paths:
        raise HttpProblem(422, "validation failed", [{"field": p, "message": NUL_MESSAGE} for p in paths])


async def refuse_nul_in_parameters(request: Request) -> None:
    """The same for path and query parameters (`?customer=a%00b`), on every route of every service."""
    bad = [
        {"field": name, "message": NUL_MESSAGE}
        for name, value in [*request.path_params.items(), *request.query_params.multi_items()]
        if "\x00" in str(value)
    ]
    if bad:
        raise HttpProblem(422, "validation failed", bad)


def parse_json(model: type[M], raw: bytes) -> M:
    """Validate a raw JSON body; a 422 naming each bad field otherwise."""
    refuse_nul_in_json(raw)
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise HttpProblem(422, "validation failed", field_errors(exc)) from None


async def json_request(request: Request, model: type[M], limit: int) -> M:
    """An unsigned JSON body: size (413), content type (415) and fields (422) checked."""
    try:
        raw = await read_body(request, limit)
    except BodyTooLarge:
        raise HttpProblem(413, f"body larger than {limit} bytes") from None
    if not is_json(request):
        raise HttpProblem(415, "content-type must be application/json")
    return parse_json(model, raw)


async def signed_body(
    request: Request, settings: Any, source: str, scheme: str = "returnflow", secrets: Sequence[bytes] | None = None
) -> bytes:
    """The raw body of a signed webhook: size (413), signature (401) and content type (415) checked.

    scheme `returnflow`: X-Returnflow-Signature (t=…,v1=…); scheme `shopify`: X-Shopify-Hmac-SHA256;
    scheme `standard`: Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature).
    `secrets`: the ones to check with (e.g. one shop's), instead of the source's in the settings.
    """
    keys = settings.secrets_for(source) if secrets is None else secrets
    limit = settings.webhook_max_body_bytes
    try:
        raw = await read_body(request, limit)
    except BodyTooLarge:
        raise HttpProblem(413, f"body larger than {limit} bytes") from None
    try:
        if scheme == "shopify":
            shopify_verify(request.headers.get(SHOPIFY_HMAC_HEADER), raw, keys)
        elif scheme == "standard":
            headers = {k.lower(): v for k, v in request.headers.items()}
            standard_verify(headers, raw, standard_keys(keys), settings.webhook_tolerance_s)
        else:
            verify(request.headers.get(SIGNATURE_HEADER), raw, keys, settings.webhook_tolerance_s)
    except SignatureError as exc:
        raise HttpProblem(401, str(exc)) from None
    if not is_json(request):
        raise HttpProblem(415, "content-type must be application/json")
    return raw


def required_header(request: Request, name: str, max_len: int = 128) -> str:
    raw = request.headers.get(name, "")
    value = raw.strip()
    if not value or len(raw) > max_len:
        raise HttpProblem(
            400,
            f"missing or invalid {name} header",
            [{"field": name, "message": f"required, at most {max_len} characters"}],
        )
    return value


async def problem_response(_: Any, exc: Exception) -> Response:
    assert isinstance(exc, HttpProblem)
    return problem_json(exc.status, exc.message, exc.fields, exc.headers, **exc.extra)


# -- dependencies every service's routes share --------------------------------------------------------------

_bearer_scheme = HTTPBearer(auto_error=False, description="a person's or a device's bearer token")


async def _bearer_token(credentials: HTTPAuthorizationCredentials | None = Depends(_bearer_scheme)) -> str | None:
    token = credentials.credentials.strip() if credentials is not None else ""
    return token or None


BearerToken = Annotated[str | None, Depends(_bearer_token)]
"""The request's bearer token (None when absent or not a bearer). Routes turn it into a person."""


def unauthorized(message: str) -> HttpProblem:
    return HttpProblem(401, message, headers={"WWW-Authenticate": "Bearer"})


# -- who may read: one read-token model for every service ---------------------------------------------------


@dataclass(frozen=True)
class Reader:
    """Who is reading, and the role they read with (ops, agent, auditor, warehouse)."""

    holder: str
    role: ReadRole


FindReader = Callable[[str], Awaitable[Reader | None]]
"""`app.state.find_reader`, set by create_app: the runtime's read tokens (RETURNFLOW_READ_TOKENS), then
the service's own people (ServiceSpec.readers: the refunds roster, audit's people, warehouse devices)."""


def reader(*roles: ReadRole) -> Callable[..., Awaitable[Reader]]:
    """A dependency for a service-to-person read: the reader holding the request's bearer token. 401 with
    `WWW-Authenticate: Bearer` for no token or an unknown one, 403 when its role may not read this.
    `Depends(reader("ops", "agent"))`."""
    allowed = frozenset(roles)

    async def current_reader(request: Request, token: BearerToken) -> Reader:
        find: FindReader | None = getattr(request.app.state, "find_reader", None)
        found = await find(token) if token and find is not None else None
        if found is None:
            raise unauthorized(f"a reader's bearer token is required (role {' or '.join(sorted(allowed))})")
        if found.role not in allowed:
            raise HttpProblem(403, f"role {found.role} may not read this (role {' or '.join(sorted(allowed))} may)")
        return found

    return current_reader


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def find_by_token(token: str | None, by_digest: Mapping[bytes, T]) -> T | None:
    """Who holds `token`, among known tokens kept as sha256 digests (compared in constant time)."""
    if not token:
        return None
    digest = token_digest(token)
    for known, holder in by_digest.items():
        if hmac.compare_digest(known, digest):
            return holder
    return None


def context_dependency(kind: type[T]) -> Callable[[Request], Awaitable[T]]:
    """A FastAPI dependency giving the service's typed context (built at start by its SPEC):
    `Ctx = Annotated[RefundsContext, Depends(context_dependency(RefundsContext))]`."""

    async def current(request: Request) -> T:
        context = request.app.state.context
        if not isinstance(context, kind):
            raise RuntimeError(f"service context is {type(context).__name__}, not {kind.__name__}")
        return context

    return current


async def request_validation_problem(request: Any, exc: Exception) -> Response:
    """FastAPI's own validation errors in the one error shape. A path parameter that does not parse
    (`/v1/returns/not-a-uuid`) names nothing that exists: 404, as for an unknown id."""
    assert isinstance(exc, RequestValidationError)
    fields = []
    status = 422
    for e in exc.errors():
        loc = [str(p) for p in e.get("loc", ())]
        if loc and loc[0] == "path":
            status = 404
        where = ".".join(loc[1:]) if loc and loc[0] in ("path", "query", "header", "body", "cookie") else ".".join(loc)
        fields.append({"field": where or "body", "message": str(e.get("msg", "invalid"))})
    if status == 404:
        names = ", ".join(f["field"] for f in fields)
        return await problem_response(request, HttpProblem(404, f"no such {names}", fields))
    return await problem_response(request, HttpProblem(422, "validation failed", fields))


async def http_exception_problem(request: Any, exc: Exception) -> Response:
    """Starlette's HTTP errors (unknown route 404, wrong method 405) in the one error shape."""
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    return await problem_response(request, HttpProblem(exc.status_code, str(exc.detail), headers=headers))
