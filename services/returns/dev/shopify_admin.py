"""A local Shopify Admin API for development and tests: the GraphQL endpoint answering the order query the
returns service sends (services/returns/shopify.py) in the shape Shopify documents, over real sockets.

    POST /admin/api/{version}/graphql.json
        X-Shopify-Access-Token: the shop's token — else 401 {"errors": "[API] Invalid API key or access
        token (unrecognized login or wrong password)"}
        {"query": "...order(id: $id)...", "variables": {"id": "gid://shopify/Order/N", "after": cursor}}
        -> {"data": {"order": {...} | null, "shop": {"ianaTimezone": ...}},
            "extensions": {"cost": {"requestedQueryCost", "actualQueryCost",
                                    "throttleStatus": {"maximumAvailable", "currentlyAvailable", "restoreRate"}}}}
        A query costing more than the shop's bucket holds is refused as Shopify does: HTTP 200 with
        {"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}]} and the cost extension.
        Line items come in pages (`lineItems(first: N, after: $after)`, pageInfo.hasNextPage/endCursor).
    POST /_dev/orders      {"id": 450789469, "name": "#1001", "currency": "USD", "total": "59.90",
                            "customer": {"id": 77, "phone": "+14155550123", "locale": "en"} | null,
                            "line_items": [{"id": 1, "sku": "TEE-S", "price": "19.95"}]}: an order to read
    POST /_dev/faults      the next requests: {"mode": "error" | "rate_limit" | "throttle" | "hang",
                            "count": n, "status": 503, "retry_after": 1, "delay_s": 3}
                            error = `status` (5xx); rate_limit = 429 with Retry-After; throttle = the cost
                            bucket emptied, so the query is THROTTLED until it refills at the restore rate;
                            hang = the answer comes after `delay_s`
    DELETE /_dev/faults    clear them;   GET /_dev/stats   requests and their answers

State is in memory. `python -m services.returns.dev.shopify_admin --port 12112 --token shpat_...` runs it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from returnflow.local_server import FaultQueue, json_response, serve_in_loop, stand_in_app

INVALID_TOKEN = "[API] Invalid API key or access token (unrecognized login or wrong password)"
FIRST = re.compile(r"lineItems\(first:\s*(\d+)")


class Fault(BaseModel):
    mode: Literal["error", "rate_limit", "throttle", "hang"]
    count: int = Field(default=1, ge=1)
    status: int = Field(default=503, ge=500, le=599)
    retry_after: float = Field(default=1.0, ge=0, le=3600)
    delay_s: float = Field(default=3.0, ge=0, le=120)


class Customer(BaseModel):
    id: int
    phone: str | None = None
    locale: str | None = None


class LineItem(BaseModel):
    id: int
    sku: str | None = None
    price: str  # the unit price after discounts, as Shopify writes money ("19.95")


class Order(BaseModel):
    id: int
    name: str = "#1001"
    currency: str = "USD"
    total: str
    customer: Customer | None = None
    customer_locale: str | None = None
    phone: str | None = None
    line_items: list[LineItem] = Field(default_factory=list)


@dataclass
class AdminState:
    access_token: str
    timezone: str = "America/New_York"
    maximum: float = 1000.0
    restore_rate: float = 50.0
    available: float = 1000.0
    at: float = field(default_factory=time.monotonic)
    orders: dict[str, Order] = field(default_factory=dict)
    faults: FaultQueue[Fault] = field(default_factory=FaultQueue)
    answers: Counter[str] = field(default_factory=Counter)

    def refill(self) -> float:
        now = time.monotonic()
        self.available = min(self.maximum, self.available + self.restore_rate * (now - self.at))
        self.at = now
        return self.available


def query_cost(query: str) -> int:
    """Shopify's requested cost, roughly: 1 per object plus, for a connection, `first` times its node's."""
    first = FIRST.search(query)
    return 10 + 3 * (int(first.group(1)) if first else 0)


def _money(amount: str, currency: str) -> dict[str, Any]:
    return {"presentmentMoney": {"amount": amount, "currencyCode": currency}}


def order_node(o: Order, first: int, after: str | None) -> dict[str, Any]:
    start = int(after) if after and after.isdigit() else 0
    page = o.line_items[start : start + first]
    end = start + len(page)
    customer = None
    if o.customer is not None:
        c = o.customer
        customer = {
            "id": f"gid://shopify/Customer/{c.id}",
            "legacyResourceId": str(c.id),
            "locale": c.locale,
            "defaultPhoneNumber": {"phoneNumber": c.phone} if c.phone else None,
        }
    return {
        "id": f"gid://shopify/Order/{o.id}",
        "legacyResourceId": str(o.id),
        "name": o.name,
        "presentmentCurrencyCode": o.currency,
        "customerLocale": o.customer_locale,
        "phone": o.phone,
        "totalPriceSet": _money(o.total, o.currency),
        "customer": customer,
        "lineItems": {
            "pageInfo": {"hasNextPage": end < len(o.line_items), "endCursor": str(end) if page else None},
            "nodes": [
                {
                    "id": f"gid://shopify/LineItem/{li.id}",
                    "sku": li.sku,
                    "discountedUnitPriceAfterAllDiscountsSet": _money(li.price, o.currency),
                }
                for li in page
            ],
        },
    }


async def graphql(state: AdminState, request: Request) -> Response:
    if request.headers.get("x-shopify-access-token") != state.access_token:
        state.answers["401"] += 1
        return json_response({"errors": INVALID_TOKEN}, 401)
    fault = state.faults.next()
    if fault is not None and fault.mode == "error":
        state.answers[str(fault.status)] += 1
        return json_response({"errors": "Internal Server Error"}, fault.status)
    if fault is not None and fault.mode == "rate_limit":
        state.answers["429"] += 1
        retry = {"Retry-After": str(fault.retry_after)}
        return json_response({"errors": "Exceeded 2 calls per second for api client."}, 429, retry)
    if fault is not None and fault.mode == "hang":
        await asyncio.sleep(fault.delay_s)
    if fault is not None and fault.mode == "throttle":
        state.available, state.at = 0.0, time.monotonic()
    body = orjson.loads(await request.body())
    query, variables = str(body.get("query") or ""), body.get("variables") or {}
    cost = query_cost(query)
    available = state.refill()
    status = {"maximumAvailable": state.maximum, "restoreRate": state.restore_rate}
    if available < cost:
        state.answers["THROTTLED"] += 1
        return json_response(
            {
                "errors": [
                    {
                        "message": "Throttled",
                        "extensions": {
                            "code": "THROTTLED",
                            "documentation": "https://shopify.dev/api/usage/rate-limits",
                        },
                    }
                ],
                "extensions": {
                    "cost": {
                        "requestedQueryCost": cost,
                        "actualQueryCost": None,
                        "throttleStatus": {**status, "currentlyAvailable": available},
                    }
                },
            }
        )
    found = state.orders.get(str(variables.get("id") or ""))
    first = FIRST.search(query)
    node = order_node(found, int(first.group(1)) if first else 50, variables.get("after")) if found else None
    actual = cost if found else 1
    state.available -= actual
    state.answers["200"] += 1
    return json_response(
        {
            "data": {"order": node, "shop": {"ianaTimezone": state.timezone}},
            "extensions": {
                "cost": {
                    "requestedQueryCost": cost,
                    "actualQueryCost": actual,
                    "throttleStatus": {**status, "currentlyAvailable": state.available},
                }
            },
        }
    )


def create_admin_app(state: AdminState) -> FastAPI:
    app = stand_in_app(
        title="local Shopify Admin API",
        service="shopify-admin-local",
        description=__doc__,
        faults=state.faults,
        fault_model=Fault,
    )

    @app.post("/admin/api/{version}/graphql.json")
    async def post_graphql(version: str, request: Request) -> Response:
        return await graphql(state, request)

    @app.post("/_dev/orders", status_code=204)
    async def add_order(order: Order) -> Response:
        state.orders[f"gid://shopify/Order/{order.id}"] = order
        return Response(status_code=204)

    @app.get("/_dev/stats")
    async def stats() -> Response:
        return json_response({"requests": sum(state.answers.values()), "answers": dict(state.answers)})

    return app


@dataclass
class LocalShopifyAdmin:
    url: str
    state: AdminState


@contextlib.asynccontextmanager
async def serve_shopify_admin(
    access_token: str = "shpat_local", host: str = "127.0.0.1", restore_rate: float = 50.0
) -> AsyncIterator[LocalShopifyAdmin]:
    """Run the local Admin API in this event loop (tests): the shops file's `api_base_url` is `.url`."""
    state = AdminState(access_token, restore_rate=restore_rate)
    async with serve_in_loop(create_admin_app(state), host) as url:
        yield LocalShopifyAdmin(url, state)


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(description="returnflow local Shopify Admin API (the order query)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True, help="the access token it accepts (the shops file's)")
    args = parser.parse_args(argv)
    uvicorn.run(create_admin_app(AdminState(args.token)), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
