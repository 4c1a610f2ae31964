"""Reading a Shopify order through the Admin GraphQL API, for the returns/request webhook: the order's
lines (SKU and unit price after discounts), currency, total, customer (id, phone, locale) and the shop's
time zone, with the shop's access token (`X-Shopify-Access-Token`).

The webhook must be answered within Shopify's 5 s, so every read has a budget (`shopify_admin_budget_s`):
inside it a read is retried with backoff (connection errors, timeouts, 5xx), waits out rate limits it
can (GraphQL cost throttling: a `THROTTLED` error, `extensions.cost.throttleStatus`; HTTP 429 with
Retry-After) and paces itself by the bucket Shopify reported last; past it, `AdminUnavailable` — the
webhook answers 503 and Shopify delivers it again. An order read is kept `shopify_order_cache_s`
(redeliveries and several returns of one order read it once).

Pure parts (`order_from_graphql`, `throttle_wait`) are tested with hypothesis; the client against
services/returns/dev/shopify_admin.py over real sockets.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from returnflow.logging import get_logger
from returnflow.shops import ShopifyPlatform
from services.returns.schemas import ShopifyOrder, ShopifyOrderLine, legacy_id, to_minor_units

log = get_logger("returns.shopify")

ACCESS_TOKEN_HEADER = "X-Shopify-Access-Token"
LINES_PER_PAGE = 100  # a page of 100 line items costs ~ 300 points: well inside a 1,000-point query

ORDER_QUERY = """
query ReturnOrder($id: ID!, $after: String) {
  order(id: $id) {
    id
    legacyResourceId
    name
    presentmentCurrencyCode
    customerLocale
    phone
    totalPriceSet { presentmentMoney { amount currencyCode } }
    customer { id legacyResourceId locale defaultPhoneNumber { phoneNumber } }
    lineItems(first: LINES_PER_PAGE, after: $after) {
      pageInfo { hasNextPage endCursor }
      nodes {
        id
        sku
        discountedUnitPriceAfterAllDiscountsSet { presentmentMoney { amount currencyCode } }
      }
    }
  }
  shop { ianaTimezone }
}
""".replace("LINES_PER_PAGE", str(LINES_PER_PAGE))


class AdminUnavailable(Exception):
    """Shopify's Admin API did not answer in time (down, throttled, slow): nothing is accepted, the webhook
    answers 503 with `retry_after_s` and Shopify delivers it again."""

    def __init__(self, message: str, retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class AdminRefused(AdminUnavailable):
    """The Admin API refused the shop's credentials or scopes (401/403, ACCESS_DENIED): a setting to fix in
    the shops file; also a 503, so Shopify's redelivery succeeds once it is fixed (the file is re-read)."""


class OrderNotFound(Exception):
    """The Admin API has no such order for this shop."""


# -- pure: the answer as an order, and the cost bucket ------------------------------------------------


def _money(node: Any, where: str, currency: str) -> int:
    amount = ((node or {}).get("presentmentMoney") or {}).get("amount")
    if amount is None:
        raise ValueError(f"{where}: no amount in the order")
    return to_minor_units(amount, currency)


def order_from_graphql(order: dict[str, Any], shop: dict[str, Any] | None, lines: list[dict[str, Any]]) -> ShopifyOrder:
    """The Admin API's `order` (and `shop`), with every page of its line items, as the facts a return needs.
    Unit prices are what the customer paid for one unit after every discount, in the presentment
    currency (the customer's: what they see and what a refund goes back in)."""
    currency = str(order.get("presentmentCurrencyCode") or "")
    total = _money(order.get("totalPriceSet"), "order.totalPriceSet", currency)
    by_id: dict[str, ShopifyOrderLine] = {}
    for i, node in enumerate(lines):
        lid = legacy_id(node.get("id"))
        if lid is None:
            continue
        price = _money(node.get("discountedUnitPriceAfterAllDiscountsSet"), f"order.lineItems.{i}", currency)
        by_id[lid] = ShopifyOrderLine(sku=str(node.get("sku") or f"line-item-{lid}")[:64], unit_price=price)
    customer = order.get("customer") or {}
    phone = ((customer.get("defaultPhoneNumber") or {}).get("phoneNumber")) or order.get("phone")
    return ShopifyOrder(
        gid=str(order.get("id") or ""),
        legacy_id=str(order.get("legacyResourceId") or legacy_id(order.get("id")) or ""),
        name=order.get("name"),
        currency=currency,
        paid_total=total,
        lines=by_id,
        customer_id=str(customer.get("legacyResourceId") or legacy_id(customer.get("id")) or "") or None,
        phone=phone or None,
        locale=order.get("customerLocale") or customer.get("locale"),
        timezone=(shop or {}).get("ianaTimezone"),
    )


def throttle_wait(available: float, restore_rate: float, cost: float) -> float:
    """Seconds until a leaky bucket holding `available` points, refilled at `restore_rate` a second, can
    pay `cost` (0: now). Shopify's GraphQL Admin API bucket: 1,000 to 20,000 points, 50 to 1,000 a second."""
    if available >= cost:
        return 0.0
    if restore_rate <= 0:
        return math.inf
    return (cost - available) / restore_rate


@dataclass
class Bucket:
    """What Shopify said last about a shop's cost bucket (`extensions.cost.throttleStatus`)."""

    maximum: float = 1000.0
    available: float = 1000.0
    restore_rate: float = 50.0
    at: float = 0.0

    def now_available(self, now: float) -> float:
        return min(self.maximum, self.available + self.restore_rate * max(0.0, now - self.at))

    def update(self, status: dict[str, Any], now: float) -> None:
        self.maximum = float(status.get("maximumAvailable") or self.maximum)
        self.available = float(status.get("currentlyAvailable", self.available))
        self.restore_rate = float(status.get("restoreRate") or self.restore_rate)
        self.at = now


# -- the client ------------------------------------------------------------------------------------------


@dataclass
class ShopifyAdmin:
    """Reads orders for the returns/request webhook. One per service process; `close()` at stop."""

    budget_s: float = 4.0
    attempt_timeout_s: float = 2.0
    cache_s: float = 60.0
    cache_size: int = 2048
    clock: Callable[[], float] = time.monotonic
    http: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=5.0))
    buckets: dict[str, Bucket] = field(default_factory=dict)
    cache: OrderedDict[tuple[str, str], tuple[float, ShopifyOrder]] = field(default_factory=OrderedDict)
    query_cost: float = 50.0  # the requestedQueryCost Shopify reported for the order query last
    requests: int = 0

    async def close(self) -> None:
        await self.http.aclose()

    async def order(self, shop: ShopifyPlatform, order_gid: str) -> ShopifyOrder:
        """The order, from the cache or the Admin API (every page of its line items) within the budget."""
        key = (shop.domain, order_gid)
        now = self.clock()
        hit = self.cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        deadline = now + self.budget_s
        lines: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            data = await self._query(shop, {"id": order_gid, "after": after}, deadline)
            order = data.get("order")
            if not isinstance(order, dict):
                raise OrderNotFound(f"no order {order_gid} in {shop.domain}")
            page = order.get("lineItems") or {}
            lines += [n for n in page.get("nodes") or [] if isinstance(n, dict)]
            info = page.get("pageInfo") or {}
            if not info.get("hasNextPage") or not info.get("endCursor"):
                break
            after = str(info["endCursor"])
        try:
            found = order_from_graphql(order, data.get("shop"), lines)
        except ValueError as exc:
            raise AdminUnavailable(f"Shopify answered an order without {exc}") from None
        self._remember(key, found)
        return found

    def _remember(self, key: tuple[str, str], order: ShopifyOrder) -> None:
        self.cache[key] = (self.clock() + self.cache_s, order)
        self.cache.move_to_end(key)
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)

    async def _pause(self, seconds: float, deadline: float, why: str) -> None:
        """Wait `seconds` before the next attempt, or give up (503) when that passes the deadline."""
        if self.clock() + seconds > deadline:
            raise AdminUnavailable(f"Shopify Admin API: {why}", retry_after_s=max(1, math.ceil(seconds)))
        await asyncio.sleep(seconds)

    async def _query(self, shop: ShopifyPlatform, variables: dict[str, Any], deadline: float) -> dict[str, Any]:
        bucket = self.buckets.setdefault(shop.domain, Bucket(at=self.clock()))
        attempt = 0
        why = "no answer"
        while True:
            wait = throttle_wait(bucket.now_available(self.clock()), bucket.restore_rate, self.query_cost)
            if wait > 0:
                await self._pause(wait, deadline, "throttled (waiting for the cost bucket to refill)")
            left = deadline - self.clock()
            if left <= 0:
                raise AdminUnavailable(f"Shopify Admin API: {why}")
            attempt += 1
            outcome = await self._attempt(shop, variables, bucket, min(self.attempt_timeout_s, left))
            if isinstance(outcome, dict):
                return outcome
            why, retry_in = outcome
            if retry_in is None:
                retry_in = min(1.0, 0.1 * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
            log.info("Shopify Admin API retry", shop=shop.domain, attempt=attempt, reason=why, retry_in_s=retry_in)
            await self._pause(retry_in, deadline, why)

    async def _attempt(
        self, shop: ShopifyPlatform, variables: dict[str, Any], bucket: Bucket, timeout_s: float
    ) -> dict[str, Any] | tuple[str, float | None]:
        """One POST: the `data` answered, or (why, seconds to wait or None for backoff) to try again."""
        self.requests += 1
        try:
            r = await self.http.post(
                shop.admin_url(),
                content=orjson.dumps({"query": ORDER_QUERY, "variables": variables}),
                headers={ACCESS_TOKEN_HEADER: shop.access_token.get_secret_value(), "content-type": "application/json"},
                timeout=timeout_s,
            )
        except httpx.TimeoutException:
            return ("timed out", None)
        except httpx.TransportError as exc:
            return (f"unreachable ({type(exc).__name__})", None)
        if r.status_code == 429:
            return ("rate limited (429)", retry_after(r.headers.get("retry-after")))
        if r.status_code >= 500:
            return (f"HTTP {r.status_code}", None)
        if r.status_code in (401, 403):
            raise AdminRefused(
                f"Shopify Admin API refused the access token of {shop.domain} ({r.status_code}): "
                "check platform.shopify.access_token in the shops file"
            )
        if r.status_code != 200:
            raise AdminRefused(f"Shopify Admin API answered {r.status_code} for {shop.domain}")
        try:
            body = orjson.loads(r.content)
        except orjson.JSONDecodeError:
            return ("an answer that is not JSON", None)
        return self._read(shop, body, bucket)

    def _read(
        self, shop: ShopifyPlatform, body: dict[str, Any], bucket: Bucket
    ) -> dict[str, Any] | tuple[str, float | None]:
        cost = (body.get("extensions") or {}).get("cost") or {}
        if isinstance(cost.get("throttleStatus"), dict):
            bucket.update(cost["throttleStatus"], self.clock())
        if cost.get("requestedQueryCost"):
            self.query_cost = float(cost["requestedQueryCost"])
        errors = body.get("errors") or []
        codes = {((e or {}).get("extensions") or {}).get("code") for e in errors if isinstance(e, dict)}
        if "THROTTLED" in codes:
            wait = throttle_wait(bucket.available, bucket.restore_rate, self.query_cost)
            return ("throttled (THROTTLED)", max(wait, 0.05))
        if "ACCESS_DENIED" in codes:
            raise AdminRefused(
                f"Shopify Admin API denied reading orders of {shop.domain}: the token needs read_orders "
                "(and read_customers for the phone)"
            )
        data = body.get("data")
        if errors and not isinstance(data, dict):
            first = errors[0].get("message") if isinstance(errors[0], dict) else str(errors[0])
            raise AdminRefused(f"Shopify Admin API error for {shop.domain}: {first}")
        return data if isinstance(data, dict) else {}


def retry_after(value: str | None, default: float = 1.0) -> float:
    """Retry-After in seconds (Shopify sends a number, e.g. `2.0`)."""
    try:
        return max(0.0, float(value)) if value else default
    except ValueError:
        return default
