"""A local Shopify Admin GraphQL API for development and tests: the documented subset returnflow's refunds
use, over real sockets, parsed, validated and executed by graphql-core against a schema of that subset.

    POST /admin/api/<YYYY-MM|unstable>/graphql.json    {"query": …, "variables": …, "operationName": …}
        X-Shopify-Access-Token: the shop's token (401 `{"errors": "[API] Invalid API key or access token
        …"}` otherwise). A document that does not validate against the subset is answered 200 with
        `errors`, as Shopify does, and nothing runs.
        query  order(id: ID!): Order — currencyCode, presentmentCurrencyCode, transactions(first:)
               (id kind status gateway errorCode parentTransaction amountSet), refunds(first:) (id note
               createdAt totalRefundedSet transactions(first:) { nodes edges })
        mutation refundCreate(input: RefundInput!) @idempotent(key: String!) — RefundInput: orderId,
               currency, note, notify, allowOverRefunding, transactions [{orderId, parentId, gateway,
               kind: REFUND, amount}]. userErrors (field, message) for an unknown order, a parent that is
               not a successful SALE/CAPTURE of the order, another gateway or currency, an amount with
               too many decimals, or one over what is left to refund on the parent.
               @idempotent: the same key and input answer with the same refund (never a second one); the
               same key with another input is IDEMPOTENCY_KEY_PARAMETER_MISMATCH; a key whose request is
               still running IDEMPOTENCY_CONCURRENT_REQUEST; a key whose first request failed (userErrors)
               IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED — top-level errors with `extensions.code`.
        Every answer carries `extensions.cost` (requestedQueryCost, actualQueryCost, throttleStatus).
    POST /_dev/orders   {"id": 1001, "amount": "50.00", "currency": "USD", "gateway": "shopify_payments"}:
                        an order paid by one successful SALE transaction
    GET  /_dev/orders/{id}   the order with its transactions and refunds
    POST /_dev/faults   the next requests (`target`: query | mutation | any): {"mode": "throttled" |
                        "rate_limit" | "error" | "timeout" | "hang" | "pending" | "failure", "count": n, "status":
                        502, "delay_s": 2.0, "retry_after": 1, "restore_rate": 50.0}
                        throttled = 200 with THROTTLED and the cost bucket empty, nothing runs; rate_limit =
                        429 with Retry-After, nothing runs; error = a 5xx, nothing runs; timeout = a
                        refundCreate IS made (its key in progress meanwhile), the answer comes after
                        `delay_s`, a query answers late; hang = nothing runs, a 500 after `delay_s`;
                        pending / failure = the refund's transaction is PENDING / FAILURE (CARD_DECLINED)
    GET  /_dev/stats    requests, refunds, replays
    GET  /_dev/refunds  every refund as the drill's invariants read a provider's refunds: {"data": [{"id",
                        "amount" (minor units), "currency", "status", "metadata": {"return_id"}}]}, the
                        return id read from the note returnflow writes

Orders not registered are created on first use with `auto_order_amount` minor units when that is set (the
money-path tests), else `order` is null. State is in memory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from graphql import (
    DocumentNode,
    GraphQLError,
    GraphQLResolveInfo,
    OperationDefinitionNode,
    OperationType,
    build_schema,
    execute_sync,
    parse,
    validate,
)
from graphql.execution.values import get_directive_values
from pydantic import BaseModel, Field

from returnflow.local_server import FaultQueue, json_response, serve_in_loop, stand_in_app
from services.refunds.providers.shopify import decimal_amount, digits

DEFAULT_VERSION = "2026-01"
VERSION_PATH = re.compile(r"^\d{4}-\d{2}$|^unstable$")
MAXIMUM_AVAILABLE = 2000.0
CURRENCIES = "CNY USD EUR GBP JPY KRW HKD TWD CAD AUD SGD CHF SEK NZD VND CLP ISK HUF"

SDL = f"""
directive @idempotent(key: String!) on FIELD
scalar Money
scalar Decimal
scalar DateTime
enum CurrencyCode {{ {CURRENCIES} }}
enum OrderTransactionKind {{ SALE CAPTURE AUTHORIZATION VOID REFUND CHANGE EMV_AUTHORIZATION SUGGESTED_REFUND }}
enum OrderTransactionStatus {{ SUCCESS FAILURE PENDING ERROR AWAITING_RESPONSE UNKNOWN }}
enum OrderTransactionErrorCode {{ CARD_DECLINED PROCESSING_ERROR GENERIC_ERROR EXPIRED_CARD }}
type MoneyV2 {{ amount: Decimal! currencyCode: CurrencyCode! }}
type MoneyBag {{ shopMoney: MoneyV2! presentmentMoney: MoneyV2! }}
type OrderTransaction {{
  id: ID! kind: OrderTransactionKind! status: OrderTransactionStatus! gateway: String
  errorCode: OrderTransactionErrorCode parentTransaction: OrderTransaction amountSet: MoneyBag!
  createdAt: DateTime!
}}
type OrderTransactionEdge {{ cursor: String! node: OrderTransaction! }}
type OrderTransactionConnection {{ nodes: [OrderTransaction!]! edges: [OrderTransactionEdge!]! }}
type Refund {{
  id: ID! note: String createdAt: DateTime totalRefundedSet: MoneyBag!
  transactions(first: Int, after: String): OrderTransactionConnection!
}}
type Order {{
  id: ID! name: String! currencyCode: CurrencyCode! presentmentCurrencyCode: CurrencyCode!
  transactions(first: Int, capturable: Boolean, manuallyResolvable: Boolean): [OrderTransaction!]!
  refunds(first: Int): [Refund!]!
}}
type UserError {{ field: [String!] message: String! }}
type RefundCreatePayload {{ order: Order refund: Refund userErrors: [UserError!]! }}
input OrderTransactionInput {{ amount: Money! gateway: String! kind: OrderTransactionKind! orderId: ID! parentId: ID }}
input RefundInput {{
  orderId: ID! currency: CurrencyCode note: String notify: Boolean allowOverRefunding: Boolean = false
  transactions: [OrderTransactionInput!]
}}
type QueryRoot {{ order(id: ID!): Order }}
type Mutation {{ refundCreate(input: RefundInput!): RefundCreatePayload }}
schema {{ query: QueryRoot mutation: Mutation }}
"""


class Fault(BaseModel):
    mode: Literal["throttled", "rate_limit", "error", "timeout", "hang", "pending", "failure"]
    target: Literal["query", "mutation", "any"] = "any"
    count: int = Field(default=1, ge=1)
    status: int = Field(default=502, ge=500, le=599)
    delay_s: float = Field(default=2.0, ge=0, le=120)
    retry_after: int = Field(default=1, ge=0, le=3600)
    restore_rate: float = Field(default=50.0, gt=0)


class NewOrder(BaseModel):
    id: int = Field(gt=0)
    amount: str = Field(pattern=r"^\d+(\.\d{1,3})?$")
    currency: str = Field(default="CNY", pattern=r"^[A-Z]{3}$")
    gateway: str = "shopify_payments"
    kind: Literal["SALE", "CAPTURE"] = "SALE"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def money_bag(amount: str, currency: str) -> dict[str, Any]:
    m = {"amount": amount, "currencyCode": currency}
    return {"shopMoney": m, "presentmentMoney": m}


@dataclass
class ShopifyState:
    access_token: str
    auto_order_amount: int | None = None
    auto_order_currency: str = "CNY"
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)  # GID -> Order
    by_key: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # key -> input fingerprint, refund GID
    in_flight: set[str] = field(default_factory=set)
    faults: FaultQueue[Fault] = field(default_factory=FaultQueue)
    requests: int = 0
    replays: int = 0
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(5_000_000_001))

    def refunds(self) -> list[dict[str, Any]]:
        return [r for o in self.orders.values() for r in o["refunds"]]

    def add_order(
        self, n: int, amount: str, currency: str, gateway: str = "shopify_payments", kind: str = "SALE"
    ) -> dict[str, Any]:
        gid = f"gid://shopify/Order/{n}"
        sale = {
            "id": f"gid://shopify/OrderTransaction/{next(self.ids)}",
            "kind": kind,
            "status": "SUCCESS",
            "gateway": gateway,
            "errorCode": None,
            "parentTransaction": None,
            "amountSet": money_bag(amount, currency),
            "createdAt": _now(),
        }
        self.orders[gid] = {
            "id": gid,
            "name": f"#{n}",
            "currencyCode": currency,
            "presentmentCurrencyCode": currency,
            "transactions": [sale],
            "refunds": [],
        }
        return self.orders[gid]

    def order(self, gid: str) -> dict[str, Any] | None:
        m = re.fullmatch(r"gid://shopify/Order/(\d+)", gid)
        if m and gid not in self.orders and self.auto_order_amount:
            self.add_order(
                int(m.group(1)),
                decimal_amount(self.auto_order_amount, self.auto_order_currency),
                self.auto_order_currency,
            )
        return self.orders.get(gid)


@dataclass
class _Request:
    """What one GraphQL request's resolvers share: the state and the fault in force."""

    state: ShopifyState
    fault: Fault | None
    key: str | None = None


def _minor(text: Any, currency: str) -> int | None:
    try:
        value = Decimal(str(text)).scaleb(digits(currency))
    except InvalidOperation:
        return None
    return int(value) if value == value.to_integral_value() and value > 0 else None


def refundable(order: dict[str, Any], parent: dict[str, Any]) -> int:
    currency = order["presentmentCurrencyCode"]
    paid = _minor(parent["amountSet"]["presentmentMoney"]["amount"], currency) or 0
    back = sum(
        _minor(t["amountSet"]["presentmentMoney"]["amount"], currency) or 0
        for t in order["transactions"]
        if t["kind"] == "REFUND" and t["status"] in ("SUCCESS", "PENDING") and t["parentTransaction"] is parent
    )
    return paid - back


def _user_error(path: list[str], message: str) -> dict[str, Any]:
    return {"order": None, "refund": None, "userErrors": [{"field": path, "message": message}]}


def create_refund(ctx: _Request, data: dict[str, Any]) -> dict[str, Any]:
    """refundCreate's effect: userErrors, or one refund with one transaction per input transaction."""
    order = ctx.state.order(str(data.get("orderId")))
    if order is None:
        return _user_error(["orderId"], "Order does not exist")
    currency = order["presentmentCurrencyCode"]
    if data.get("currency") not in (None, currency):
        return _user_error(["currency"], f"Currency must be the order's presentment currency {currency}")
    planned: list[tuple[dict[str, Any], int]] = []
    for i, tx in enumerate(data.get("transactions") or []):
        where = ["transactions", str(i)]
        parent = next((t for t in order["transactions"] if t["id"] == tx.get("parentId")), None)
        if tx.get("orderId") != order["id"]:
            return _user_error([*where, "orderId"], "Transaction order does not match the refund's order")
        if tx.get("kind") != "REFUND":
            return _user_error([*where, "kind"], "Kind must be REFUND")
        if parent is None or parent["kind"] not in ("SALE", "CAPTURE") or parent["status"] != "SUCCESS":
            return _user_error([*where, "parentId"], "Parent transaction must be a successful sale or capture")
        if tx.get("gateway") != parent["gateway"]:
            return _user_error([*where, "gateway"], f"Gateway must be {parent['gateway']}, the parent's")
        amount = _minor(tx.get("amount"), currency)
        if amount is None:
            return _user_error([*where, "amount"], f"Amount {tx.get('amount')} is not a valid {currency} amount")
        left = refundable(order, parent) - sum(a for p, a in planned if p is parent)
        if amount > left and not data.get("allowOverRefunding"):
            return _user_error(
                [*where, "amount"],
                f"Refund amount {tx.get('amount')} {currency} is greater than the refundable amount "
                f"{decimal_amount(left, currency) if left > 0 else '0'} {currency}",
            )
        planned.append((parent, amount))
    status = {"pending": "PENDING", "failure": "FAILURE"}.get(ctx.fault.mode if ctx.fault else "", "SUCCESS")
    txs = [
        {
            "id": f"gid://shopify/OrderTransaction/{next(ctx.state.ids)}",
            "kind": "REFUND",
            "status": status,
            "gateway": parent["gateway"],
            "errorCode": "CARD_DECLINED" if status == "FAILURE" else None,
            "parentTransaction": parent,
            "amountSet": money_bag(decimal_amount(amount, currency), currency),
            "createdAt": _now(),
        }
        for parent, amount in planned
    ]
    order["transactions"].extend(txs)
    total = sum(a for _, a in planned) if status != "FAILURE" else 0
    refund = {
        "id": f"gid://shopify/Refund/{next(ctx.state.ids)}",
        "note": data.get("note"),
        "createdAt": _now(),
        "totalRefundedSet": money_bag(decimal_amount(total, currency) if total else "0.00", currency),
        "transactions": {
            "nodes": txs,
            "edges": [{"cursor": t["id"], "node": t} for t in txs],
        },
    }
    order["refunds"].append(refund)
    return {"order": order, "refund": refund, "userErrors": []}


def make_schema() -> Any:
    schema = build_schema(SDL)
    idempotent = schema.get_directive("idempotent")
    assert idempotent is not None

    def resolve_order(_: Any, info: GraphQLResolveInfo, id: str) -> dict[str, Any] | None:
        ctx: _Request = info.context
        return ctx.state.order(id)

    def resolve_refund_create(_: Any, info: GraphQLResolveInfo, input: dict[str, Any]) -> dict[str, Any]:
        ctx: _Request = info.context
        state = ctx.state
        args = get_directive_values(idempotent, info.field_nodes[0], info.variable_values) or {}
        key = args.get("key")
        fingerprint = hashlib.sha256(orjson.dumps(input, option=orjson.OPT_SORT_KEYS)).hexdigest()
        if key:
            if key in state.in_flight:
                raise GraphQLError(
                    "This request is currently in progress, please try again.",
                    extensions={"code": "IDEMPOTENCY_CONCURRENT_REQUEST"},
                )
            if key in state.by_key:
                first, refund_id = state.by_key[key]
                if first != fingerprint:
                    raise GraphQLError(
                        "The same idempotency key cannot be used with different operation parameters.",
                        extensions={"code": "IDEMPOTENCY_KEY_PARAMETER_MISMATCH"},
                    )
                if refund_id is None:
                    raise GraphQLError(
                        "A previous request with this idempotency key failed. Retry with a new idempotency key.",
                        extensions={"code": "IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED"},
                    )
                state.replays += 1
                order = state.orders[str(input["orderId"])]
                refund = next(r for r in order["refunds"] if r["id"] == refund_id)
                return {"order": order, "refund": refund, "userErrors": []}
        payload = create_refund(ctx, input)
        if key:
            state.by_key[key] = (fingerprint, payload["refund"]["id"] if payload["refund"] else None)
            ctx.key = key
        return payload

    assert schema.query_type is not None and schema.mutation_type is not None
    schema.query_type.fields["order"].resolve = resolve_order
    schema.mutation_type.fields["refundCreate"].resolve = resolve_refund_create
    return schema


SCHEMA = make_schema()


def _cost(requested: int, available: float, restore_rate: float = 100.0, actual: int | None = None) -> dict[str, Any]:
    return {
        "cost": {
            "requestedQueryCost": requested,
            "actualQueryCost": actual,
            "throttleStatus": {
                "maximumAvailable": MAXIMUM_AVAILABLE,
                "currentlyAvailable": available,
                "restoreRate": restore_rate,
            },
        }
    }


def _operation(document: DocumentNode, name: str | None) -> OperationDefinitionNode | None:
    ops = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if name:
        return next((o for o in ops if o.name and o.name.value == name), None)
    return ops[0] if len(ops) == 1 else None


async def graphql_endpoint(state: ShopifyState, request: Request, version: str) -> Response:
    state.requests += 1
    if not VERSION_PATH.match(version):
        return json_response({"errors": "Not Found"}, 404)
    token = request.headers.get("x-shopify-access-token", "")
    if token != state.access_token:
        return json_response(
            {"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}, 401
        )
    try:
        body = orjson.loads(await request.body())
        query, variables, name = body["query"], body.get("variables") or {}, body.get("operationName")
        document = parse(query)
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return json_response({"errors": [{"message": "Bad Request: a JSON body with `query` is required"}]}, 400)
    except GraphQLError as exc:
        return json_response({"errors": [exc.formatted]})
    problems = validate(SCHEMA, document)
    if problems:
        return json_response({"errors": [e.formatted for e in problems]})
    op = _operation(document, name)
    if op is None:
        return json_response({"errors": [{"message": "An operation name is required"}]})
    mutation = op.operation is OperationType.MUTATION
    requested = 10 if mutation else 12
    fault = state.faults.next("mutation" if mutation else "query")
    if fault is not None and fault.mode == "throttled":
        throttled = {"message": "Throttled", "extensions": {"code": "THROTTLED"}}
        return json_response({"errors": [throttled], "extensions": _cost(requested, 0.0, fault.restore_rate)})
    if fault is not None and fault.mode == "rate_limit":
        return json_response(
            {"errors": "Exceeded 2 calls per second for api client."}, 429, {"retry-after": str(fault.retry_after)}
        )
    if fault is not None and fault.mode == "error":
        return json_response({"errors": "Internal Server Error"}, fault.status)
    if fault is not None and fault.mode == "hang":
        await asyncio.sleep(fault.delay_s)
        return json_response({"errors": "Internal Server Error"}, 500)
    ctx = _Request(state, fault)
    if fault is not None and fault.mode == "timeout" and not mutation:
        await asyncio.sleep(fault.delay_s)
    result = execute_sync(SCHEMA, document, context_value=ctx, variable_values=variables, operation_name=name)
    answer: dict[str, Any] = {"data": result.data}
    if result.errors:
        answer["errors"] = [e.formatted for e in result.errors]
    answer["extensions"] = _cost(requested, MAXIMUM_AVAILABLE - requested, actual=requested)
    if fault is not None and fault.mode == "timeout" and mutation:
        # made; the answer comes after the caller gave up, and the key is in progress until then
        if ctx.key:
            state.in_flight.add(ctx.key)
        try:
            await asyncio.sleep(fault.delay_s)
        finally:
            if ctx.key:
                state.in_flight.discard(ctx.key)
    return json_response(answer)


def _plain(order: dict[str, Any]) -> dict[str, Any]:
    """An order as JSON (a parent transaction as its id)."""

    def tx(t: dict[str, Any]) -> dict[str, Any]:
        return {**t, "parentTransaction": {"id": t["parentTransaction"]["id"]} if t["parentTransaction"] else None}

    refunds = [{**r, "transactions": {"nodes": [tx(t) for t in r["transactions"]["nodes"]]}} for r in order["refunds"]]
    return {**order, "transactions": [tx(t) for t in order["transactions"]], "refunds": refunds}


NOTE_RETURN = re.compile(r"return (\S+) \[returnflow:")


def listed(refund: dict[str, Any]) -> dict[str, Any]:
    """A refund in the shape the drill's invariants read (bench/invariants.py)."""
    money = refund["totalRefundedSet"]["presentmentMoney"]
    states = {t["status"] for t in refund["transactions"]["nodes"]}
    m = NOTE_RETURN.search(refund.get("note") or "")
    return {
        "id": refund["id"],
        "amount": _minor(money["amount"], money["currencyCode"]) or 0,
        "currency": money["currencyCode"],
        "status": "succeeded" if states == {"SUCCESS"} else ",".join(sorted(states)).lower(),
        "metadata": {"return_id": m.group(1) if m else None},
    }


def create_shopify_app(state: ShopifyState) -> FastAPI:
    app = stand_in_app(
        title="returnflow local Shopify (Admin GraphQL, refunds subset)",
        service="shopify-local",
        description=__doc__,
        faults=state.faults,
        fault_model=Fault,
    )
    app.state.shopify = state

    @app.post("/admin/api/{version}/graphql.json")
    async def graphql(version: str, request: Request) -> Response:
        return await graphql_endpoint(state, request, version)

    @app.post("/_dev/orders", status_code=204)
    async def add_order(order: NewOrder) -> Response:
        state.add_order(order.id, order.amount, order.currency, order.gateway, order.kind)
        return Response(status_code=204)

    @app.get("/_dev/orders/{number}")
    async def get_order(number: int) -> Response:
        found = state.orders.get(f"gid://shopify/Order/{number}")
        return json_response(_plain(found)) if found else json_response({"errors": "Not Found"}, 404)

    @app.get("/_dev/refunds")
    async def list_refunds() -> Response:
        return json_response({"data": [listed(r) for r in state.refunds()]})

    @app.get("/_dev/stats")
    async def stats() -> Response:
        return json_response({"requests": state.requests, "refunds": len(state.refunds()), "replays": state.replays})

    return app


@dataclass
class LocalShopify:
    url: str  # the server's base URL
    admin_url: str  # its GraphQL endpoint (what ShopifyGateway takes)
    state: ShopifyState


@contextlib.asynccontextmanager
async def serve_shopify(
    access_token: str = "shpat_local",
    host: str = "127.0.0.1",
    auto_order_amount: int | None = None,
    auto_order_currency: str = "CNY",
    api_version: str = DEFAULT_VERSION,
) -> AsyncIterator[LocalShopify]:
    """Run the local Shopify Admin API in this event loop (tests)."""
    state = ShopifyState(access_token, auto_order_amount, auto_order_currency)
    async with serve_in_loop(create_shopify_app(state), host) as url:
        yield LocalShopify(url, f"{url}/admin/api/{api_version}/graphql.json", state)


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from services.refunds.settings import RefundsSettings

    parser = argparse.ArgumentParser(description="returnflow local Shopify Admin GraphQL API (refunds subset)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--auto-order-amount", type=int, default=10**9, help="minor units; 0: only registered orders")
    parser.add_argument("--auto-order-currency", default="CNY")
    args = parser.parse_args(argv)
    s = RefundsSettings.load()  # the same token as the refunds service it serves
    token = s.shopify_access_token.get_secret_value() if s.shopify_access_token else "shpat_local"
    state = ShopifyState(token, args.auto_order_amount or None, args.auto_order_currency)
    uvicorn.run(create_shopify_app(state), host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
