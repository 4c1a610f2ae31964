"""What every service's HTTP layer does before a route runs: the one error shape for FastAPI's own
errors, typed path ids (an unparsable one is a 404), bearer tokens, and no NUL character reaching
PostgreSQL. Exercised on a small app built by the runtime's create_app (no server, no database)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, SecretStr

from returnflow.http import BearerToken, Reader, parse_json, reader, unauthorized
from returnflow.service import ServiceSpec, create_app
from returnflow.settings import ReadToken, Settings


class Note(BaseModel):
    text: str
    tags: list[str] = []


router = APIRouter()


@router.get("/v1/things/{thing_id}")
async def get_thing(thing_id: uuid.UUID, q: str | None = None, limit: int = 10) -> dict[str, Any]:
    return {"thing_id": str(thing_id), "q": q, "limit": limit}


@router.post("/v1/notes")
async def post_note(request: Request, token: BearerToken) -> dict[str, Any]:
    if token != "let-me-in":
        raise unauthorized("a bearer token is required")
    return parse_json(Note, await request.body()).model_dump()


SPEC: ServiceSpec[Any] = ServiceSpec(name="shape", folder=Path(__file__).parent, router=router)


def client() -> httpx.AsyncClient:
    settings = Settings(
        database_url=SecretStr("postgresql://nowhere/none"), kafka_bootstrap="nowhere:9092", dev_stack=True
    )
    app = create_app(SPEC, settings)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shape")


async def test_typed_path_and_query_parameters() -> None:
    async with client() as c:
        tid = uuid.uuid4()
        assert (await c.get(f"/v1/things/{tid}?limit=3")).json() == {"thing_id": str(tid), "q": None, "limit": 3}
        r = await c.get("/v1/things/not-a-uuid")
        assert r.status_code == 404
        assert r.json()["fields"][0]["field"] == "thing_id"
        r = await c.get(f"/v1/things/{tid}?limit=many")
        assert r.status_code == 422 and r.json()["fields"][0]["field"] == "limit"
        assert r.headers["content-type"] == "application/problem+json"
        assert set(r.json()) == {"type", "title", "status", "detail", "fields"}
        assert r.json()["status"] == 422 and r.json()["type"] == "about:blank"


async def test_unknown_routes_and_methods_answer_in_the_same_shape() -> None:
    async with client() as c:
        r = await c.get("/v1/nowhere")
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
        assert r.json() == {"type": "about:blank", "title": "Not Found", "status": 404, "detail": "Not Found"}
        r = await c.delete("/v1/notes")
        assert r.status_code == 405 and r.headers["content-type"] == "application/problem+json"
        assert r.json()["title"] == "Method Not Allowed" and r.headers["allow"] == "POST"


async def test_a_nul_character_is_refused_naming_where_it_is() -> None:
    async with client() as c:
        r = await c.get(f"/v1/things/{uuid.uuid4()}?q=a%00b")
        assert r.status_code == 422
        assert r.json()["fields"] == [{"field": "q", "message": "must not contain a NUL character"}]
        body = b'{"text": "ok", "tags": ["fine", "bad\\u0000tag"]}'
        headers = {"authorization": "Bearer let-me-in", "content-type": "application/json"}
        r = await c.post("/v1/notes", content=body, headers=headers)
        assert r.status_code == 422 and r.json()["fields"] == [
            {"field": "tags.1", "message": "must not contain a NUL character"}
        ]


async def test_a_bearer_token_is_required_and_challenged() -> None:
    async with client() as c:
        r = await c.post("/v1/notes", json={"text": "hi"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        r = await c.post("/v1/notes", json={"text": "hi"}, headers={"authorization": "Bearer let-me-in"})
        assert r.status_code == 200 and r.json() == {"text": "hi", "tags": []}


@router.get("/v1/secrets")
async def read_secret(who: Annotated[Reader, Depends(reader("ops", "auditor"))]) -> dict[str, Any]:
    return {"holder": who.holder, "role": who.role}


def read_client() -> httpx.AsyncClient:
    tokens = {
        "olga": ReadToken(token=SecretStr("ops-token"), role="ops"),
        "wes": ReadToken(token=SecretStr("device-token"), role="warehouse"),
    }
    settings = Settings(
        database_url=SecretStr("postgresql://nowhere/none"),
        kafka_bootstrap="nowhere:9092",
        dev_stack=True,
        read_tokens=tokens,
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(SPEC, settings)), base_url="http://shape")


async def test_a_read_takes_a_reader_token_with_a_role_that_may_read_it() -> None:
    async with read_client() as c:
        for headers in ({}, {"authorization": "Bearer nobody-knows-this"}, {"authorization": "Basic b3BzOng="}):
            r = await c.get("/v1/secrets", headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            assert r.headers["content-type"] == "application/problem+json"
        r = await c.get("/v1/secrets", headers={"authorization": "Bearer device-token"})
        assert r.status_code == 403 and "warehouse" in r.json()["detail"]
        r = await c.get("/v1/secrets", headers={"authorization": "Bearer ops-token"})
        assert r.status_code == 200 and r.json() == {"holder": "olga", "role": "ops"}
        assert (await c.get("/healthz")).status_code == 200  # ops endpoints stay open


async def test_the_openapi_documents_errors_as_problems_and_metrics_as_text() -> None:
    async with read_client() as c:
        doc = (await c.get("/openapi.json")).json()
    assert "Problem" in doc["components"]["schemas"] and "HTTPValidationError" not in doc["components"]["schemas"]
    thing = doc["paths"]["/v1/things/{thing_id}"]["get"]["responses"]
    assert set(thing) >= {"200", "404", "422", "503"}
    assert thing["404"]["content"] == {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    secrets = doc["paths"]["/v1/secrets"]["get"]
    assert "401" in secrets["responses"] and secrets["security"] == [{"HTTPBearer": []}]
    assert list(doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
