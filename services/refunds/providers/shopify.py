"""The Shopify adapter: refunds of orders paid on Shopify through the Admin GraphQL API's `refundCreate`.

One attempt is two requests to the shop's GraphQL endpoint (`…/admin/api/<version>/graphql.json`,
`X-Shopify-Access-Token`):

1. `order(id:)` — the order's currency, its transactions and its refunds. A refund whose note carries
   this refund's marker (`[returnflow:<idempotency key>]`), or whose id is the `reference` an earlier
   series kept, IS this refund: its outcome is read from it and nothing is created. This is how an
   unknown outcome (a timeout after sending) is learnt, and why a later series never pays twice.
2. `refundCreate(input: RefundInput!) @idempotent(key: …)` — a money-only refund (no line items, no
   restock: the ledger refunds amounts) of `transactions: [{orderId, parentId, gateway, kind: REFUND,
   amount}]` against one parent transaction: the order's SALE/CAPTURE transaction with status SUCCESS
   that has the most left to refund (its amount less the REFUND transactions under it). The ledger's
   key goes in the `@idempotent` directive (API versions 2026-01 and later; replayed by Shopify: the
   same key answers with the same refund) and in the note.

Shopify's answers onto the ledger's outcomes (`classify`, pure):
    refund, every REFUND transaction SUCCESS        -> paid (reference: the Refund GID)
    refund, a transaction FAILURE / ERROR            -> declined (its errorCode), reference kept
    refund, PENDING / AWAITING_RESPONSE / UNKNOWN    -> unknown, reference kept (read back next series)
    userErrors (over the refundable balance, …)      -> declined, final, with Shopify's message
    IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED              -> declined (that key can never succeed)
    IDEMPOTENCY_CONCURRENT_REQUEST, _KEY_PARAMETER_  -> unknown: a request under this key may be paying
      MISMATCH
    THROTTLED (cost extensions), HTTP 429            -> retryable, after the bucket refills / Retry-After
    HTTP 5xx, INTERNAL_SERVER_ERROR, a timeout or a  -> unknown after a refundCreate was sent (the next
      lost connection                                   attempt's order query finds it or asks again under
                                                        the same key), retryable after a query
    HTTP 401 (token), 403 / ACCESS_DENIED (scope),   -> declined, final, naming the setting to fix:
      404 (shop or API version)                         nothing was made
    an order that is not Shopify's, not found, in    -> declined
      another currency, without a refundable payment

An API version before 2026-01 has no `@idempotent`: the directive is left out and a refundCreate whose
answer was lost is not sent again in the same series — the next series' order query decides (the
marker in the note), which leaves a window if Shopify is still processing the lost request then. Use
2026-01 or later.

Money: Shopify's `Money` is a decimal string in the order's presentment currency; the ledger's integer
minor units convert exactly (`decimal_amount`: two decimals, none for the zero-decimal currencies —
the same table as the returns intake, so an amount converts back to the decimal it was read from).
The access token is never logged.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

import h11
import orjson

from returnflow.logging import get_logger
from returnflow.loops import Backoff
from services.refunds.gateway import GatewayResult, Http11Pool, declined, json_object, paid, retryable, unknown

log = get_logger("refunds.shopify")

TOKEN_HEADER = "X-Shopify-Access-Token"
TOKEN_SETTING = "RETURNFLOW_REFUNDS_SHOPIFY_ACCESS_TOKEN (or the shop's platform.shopify.access_token)"
URL_SETTING = "RETURNFLOW_REFUNDS_SHOPIFY_ADMIN_URL (or the shop's platform.shopify domain / api_version)"
# The returns intake's zero-decimal currencies (services/returns/schemas.py ZERO_DECIMAL_CURRENCIES):
# the ledger's minor units of these are whole units.
ZERO_DECIMAL_CURRENCIES = frozenset({"JPY", "KRW", "VND", "CLP", "ISK", "HUF", "TWD"})
IDEMPOTENT_SINCE = "2026-01"
RETRY_AFTER_MAX_S = 30.0  # a longer wait ends the series (the ledger asks again later)
PARENT_KINDS = frozenset({"SALE", "CAPTURE"})
SETTLED_FAILED = frozenset({"FAILURE", "ERROR"})
ADMIN_PATH = re.compile(r"/admin/api/(\d{4}-\d{2}|unstable)/graphql\.json$")
ORDER_GID = re.compile(r"^gid://shopify/Order/(\d+)$")

_MONEY = "presentmentMoney { amount currencyCode }"
_REFUND_FIELDS = (
    f"id note createdAt totalRefundedSet {{ {_MONEY} }} "
    f"transactions(first: 20) {{ nodes {{ id kind status gateway errorCode amountSet {{ {_MONEY} }} }} }}"
)
ORDER_QUERY = (
    "query ReturnflowRefundOrder($id: ID!) { order(id: $id) { id currencyCode presentmentCurrencyCode "
    f"transactions(first: 100) {{ id kind status gateway parentTransaction {{ id }} amountSet {{ {_MONEY} }} }} "
    f"refunds(first: 100) {{ {_REFUND_FIELDS} }} }} }}"
)


def refund_mutation(idempotency_key: str | None) -> str:
    """The refundCreate document; the key is a GraphQL string literal in the `@idempotent` directive."""
    directive = f" @idempotent(key: {orjson.dumps(idempotency_key).decode()})" if idempotency_key else ""
    return (
        "mutation ReturnflowRefundCreate($input: RefundInput!) { "
        f"refundCreate(input: $input){directive} {{ refund {{ {_REFUND_FIELDS} }} userErrors {{ field message }} }} }}"
    )


def order_gid(payment_reference: str) -> str | None:
    """The Shopify order a payment reference names: `gid://shopify/Order/<n>` or the bare number `<n>`."""
    ref = payment_reference.strip()
    if ORDER_GID.match(ref):
        return ref
    if ref.isdigit():
        return f"gid://shopify/Order/{int(ref)}"
    return None


def digits(currency: str) -> int:
    return 0 if currency.upper() in ZERO_DECIMAL_CURRENCIES else 2


def decimal_amount(amount: int, currency: str) -> str:
    """Ledger minor units -> Shopify's Money string: 4000 CNY -> "40.00", 1500 JPY -> "1500"."""
    if amount <= 0:
        raise ValueError(f"a refund amount must be positive minor units, not {amount}")
    n = digits(currency)
    return str(amount) if n == 0 else f"{amount // 10**n}.{amount % 10**n:0{n}d}"


def minor_units(text: Any, currency: str) -> int:
    """Shopify's Money string back to minor units, exactly (more decimals than the currency has: ValueError)."""
    try:
        value = Decimal(str(text)).scaleb(digits(currency))
    except InvalidOperation:
        raise ValueError(f"not a decimal amount: {text!r}") from None
    if value != value.to_integral_value():
        raise ValueError(f"{text} has more decimals than {currency} allows")
    return int(value)


def marker(idempotency_key: str) -> str:
    return f"[returnflow:{idempotency_key}]"


def refund_note(idempotency_key: str, metadata: Mapping[str, str]) -> str:
    """The refund's note: readable in the Shopify admin, and carrying the marker the order query matches."""
    what = f"return {metadata['return_id']}" if metadata.get("return_id") else "a return"
    return f"returnflow refund of {what} {marker(idempotency_key)}"


def api_version(admin_url: str) -> str:
    m = ADMIN_PATH.search(urlsplit(admin_url).path)
    if m is None:
        raise ValueError(
            f"the Shopify admin URL must be https://<shop>.myshopify.com/admin/api/<YYYY-MM>/graphql.json, "
            f"not {admin_url!r}: {URL_SETTING}"
        )
    return m.group(1)


def supports_idempotent(version: str) -> bool:
    return version == "unstable" or version >= IDEMPOTENT_SINCE


def _money(node: Any) -> tuple[str, str] | None:
    """(amount, currency) of a MoneyBag's presentment money."""
    if not isinstance(node, dict) or not isinstance(node.get("presentmentMoney"), dict):
        return None
    m = node["presentmentMoney"]
    return str(m.get("amount")), str(m.get("currencyCode") or "")


def find_refund(order: Mapping[str, Any], idempotency_key: str, reference: str | None) -> dict[str, Any] | None:
    """The order's refund that is this ledger refund: by its id from an earlier series, or by the marker."""
    mark = marker(idempotency_key)
    for refund in order.get("refunds") or []:
        if isinstance(refund, dict) and (
            (reference and refund.get("id") == reference) or mark in str(refund.get("note") or "")
        ):
            return refund
    return None


def parent_transaction(order: Mapping[str, Any], amount: int, currency: str) -> dict[str, Any] | None:
    """The SALE/CAPTURE (SUCCESS) transaction to refund against: one that still covers `amount` if any,
    else the one with the most left (Shopify then refuses an amount over it: declined, with its message)."""
    txs = [t for t in order.get("transactions") or [] if isinstance(t, dict)]
    refunded: dict[str, int] = {}
    for t in txs:
        parent = (t.get("parentTransaction") or {}).get("id")
        money = _money(t.get("amountSet"))
        if t.get("kind") == "REFUND" and t.get("status") == "SUCCESS" and parent and money:
            refunded[parent] = refunded.get(parent, 0) + minor_units(money[0], currency)
    candidates: list[tuple[int, dict[str, Any]]] = []
    for t in txs:
        money = _money(t.get("amountSet"))
        if t.get("kind") in PARENT_KINDS and t.get("status") == "SUCCESS" and money is not None:
            candidates.append((minor_units(money[0], currency) - refunded.get(str(t.get("id")), 0), t))
    covering = [c for c in candidates if c[0] >= amount]
    pool = covering or candidates
    return max(pool, key=lambda c: c[0])[1] if pool else None


def refund_input(
    order: Mapping[str, Any], parent: Mapping[str, Any], amount: int, currency: str, note: str, notify: bool
) -> dict[str, Any]:
    """The RefundInput: the amount back to the parent transaction's gateway, in the presentment currency."""
    return {
        "orderId": order["id"],
        "currency": currency,
        "note": note,
        "notify": notify,
        "transactions": [
            {
                "orderId": order["id"],
                "parentId": parent["id"],
                "gateway": parent["gateway"],
                "kind": "REFUND",
                "amount": decimal_amount(amount, currency),
            }
        ],
    }


def refund_outcome(refund: Mapping[str, Any], amount: int, currency: str) -> GatewayResult:
    """A Refund object (created now or found on the order) as the ledger's outcome."""
    rid = str(refund.get("id"))
    total = _money(refund.get("totalRefundedSet"))
    if total is not None and total[1] and total[1] != currency:
        return unknown(f"Shopify refund {rid} is in {total[1]}, the ledger's in {currency}: for a person to check", rid)
    nodes = [t for t in ((refund.get("transactions") or {}).get("nodes") or []) if isinstance(t, dict)]
    failed = [t for t in nodes if t.get("status") in SETTLED_FAILED]
    if failed:
        codes = ", ".join(str(t.get("errorCode") or t.get("status")) for t in failed)
        return declined(f"Shopify refund {rid} failed at the payment gateway: {codes}", rid)
    if not nodes or any(t.get("status") != "SUCCESS" for t in nodes):
        states = ", ".join(str(t.get("status")) for t in nodes) or "no transaction yet"
        return unknown(f"Shopify refund {rid} is not settled ({states})", rid)
    if total is not None:
        try:
            got = minor_units(total[0], currency)
        except ValueError:
            got = -1
        if got != amount:
            return unknown(f"Shopify refund {rid} is {total[0]} {currency}, the ledger's {amount} minor units", rid)
    return paid(rid)


def error_codes(body: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Top-level GraphQL errors as (extensions.code, message)."""
    errors = body.get("errors")
    if isinstance(errors, str):
        return [("", errors)]
    out = []
    for e in errors if isinstance(errors, list) else []:
        if isinstance(e, dict):
            ext = e.get("extensions") if isinstance(e.get("extensions"), dict) else {}
            assert isinstance(ext, dict)
            out.append((str(ext.get("code") or ""), str(e.get("message") or "")[:300]))
    return out


def throttle_wait_s(body: Mapping[str, Any]) -> float | None:
    """How long until the cost bucket holds the requested cost again (extensions.cost.throttleStatus)."""
    cost = (body.get("extensions") or {}).get("cost") if isinstance(body.get("extensions"), dict) else None
    if not isinstance(cost, dict) or not isinstance(cost.get("throttleStatus"), dict):
        return None
    status = cost["throttleStatus"]
    try:
        need = float(cost.get("requestedQueryCost") or 0) - float(status.get("currentlyAvailable") or 0)
        rate = float(status.get("restoreRate") or 0)
    except (TypeError, ValueError):
        return None
    return max(0.0, need / rate) if rate > 0 else None


@dataclass(frozen=True)
class _Answer:
    """One request's reading: a ledger outcome (or None: `data` holds the answer), the GraphQL data, the
    wait Shopify asked for, and whether a refundCreate may have been made without our knowing."""

    result: GatewayResult | None
    data: dict[str, Any] | None = None
    wait_s: float | None = None
    uncertain: bool = False


def classify(status: int, headers: Mapping[str, str], body: Mapping[str, Any], mutation: bool) -> _Answer:
    """One HTTP answer of the GraphQL endpoint (the table in the module doc)."""
    if status == 401:
        return _Answer(
            declined(
                f"Shopify refused the access token (401 {error_codes(body)[0][1] if error_codes(body) else ''}): "
                f"set {TOKEN_SETTING} to an Admin API access token of this shop"
            )
        )
    if status == 403:
        return _Answer(declined("Shopify refused access (403): the access token needs the write_orders scope"))
    if status == 404:
        return _Answer(declined(f"no Shopify shop or API version at this admin URL (404): check {URL_SETTING}"))
    if status == 429:
        ra = headers.get("retry-after", "").strip()
        wait = float(ra) if ra.replace(".", "", 1).isdigit() else None
        return _Answer(retryable("Shopify answered 429 Too Many Requests"), wait_s=wait)
    if status >= 500 or status != 200:
        what = f"Shopify answered HTTP {status}"
        return _Answer(unknown(what), uncertain=True) if mutation else _Answer(retryable(what))
    for code, message in error_codes(body):
        what = f"Shopify answered {code or 'an error'}: {message}"
        if code == "THROTTLED":
            return _Answer(retryable(what), wait_s=throttle_wait_s(body))
        if code == "ACCESS_DENIED":
            return _Answer(declined(f"{what} (the access token needs the write_orders scope)"))
        if code in ("IDEMPOTENCY_CONCURRENT_REQUEST", "IDEMPOTENCY_KEY_PARAMETER_MISMATCH"):
            return _Answer(unknown(what), uncertain=True)
        if code == "IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED":
            return _Answer(declined(what))
        if code in ("INTERNAL_SERVER_ERROR", "SERVICE_UNAVAILABLE"):
            return _Answer(unknown(what), uncertain=True) if mutation else _Answer(retryable(what))
        return _Answer(declined(f"Shopify refused the request: {what}"))  # not executed: nothing was made
    data = body.get("data")
    if not isinstance(data, dict):
        what = "Shopify's answer has no data"
        return _Answer(unknown(what), uncertain=True) if mutation else _Answer(retryable(what))
    return _Answer(None, data)


def user_errors(errors: Sequence[Any]) -> str:
    parts = []
    for e in errors:
        if isinstance(e, dict):
            field = ".".join(str(f) for f in e.get("field") or [])
            parts.append(f"{field}: {e.get('message')}" if field else str(e.get("message")))
    return "; ".join(parts)[:400]


class ShopifyGateway:
    """Refunds of Shopify orders through the Admin GraphQL API. `admin_url` is the shop's GraphQL endpoint
    (`ShopifyPlatform.admin_url()` in returnflow/shops.py) and may point at the local server
    (services/refunds/dev/shopify_admin.py)."""

    def __init__(
        self,
        admin_url: str,
        access_token: str,
        timeout_s: float = 10.0,
        attempts: int = 3,
        backoff_s: float = 0.5,
        max_connections: int = 32,
        notify: bool = False,
    ) -> None:
        self.version = api_version(admin_url)
        self.idempotent = supports_idempotent(self.version)
        if not self.idempotent:
            log.warning(
                "shopify API version without @idempotent: a lost refundCreate is only found by its note",
                api_version=self.version,
            )
        url = urlsplit(admin_url)
        self.path = url.path
        self.access_token = access_token
        self.timeout_s = timeout_s
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.notify = notify
        self.pool = Http11Pool(f"{url.scheme}://{url.netloc}", max_connections)

    async def refund(
        self,
        idempotency_key: str,
        payment_id: str,
        amount: int,
        currency: str,
        metadata: dict[str, str],
        reference: str | None = None,
    ) -> GatewayResult:
        """Look for this refund on the order (learning an unknown outcome), else create it under the key;
        retried within the series, and never sent again blind after a lost answer."""
        gid = order_gid(payment_id)
        if gid is None:
            return declined(
                f"no Shopify order to refund: {payment_id!r} is not an order GID (gid://shopify/Order/…) or "
                "number; send the Shopify order id as the return's order_id or payment_reference"
            )
        try:
            decimal_amount(amount, currency)
        except ValueError as exc:
            return declined(str(exc))
        note = refund_note(idempotency_key, metadata)
        backoff = Backoff(self.backoff_s, self.backoff_s * 2**self.attempts)
        result, sent = unknown("no attempt made"), False
        for attempt in range(1, self.attempts + 1):
            answer = await self._attempt(gid, idempotency_key, amount, currency, note, reference, sent)
            result = answer.result or result
            sent = sent or answer.uncertain
            if result.outcome in ("paid", "declined") or result.reference or attempt == self.attempts:
                break
            if answer.wait_s is not None and answer.wait_s > RETRY_AFTER_MAX_S:
                break
            await (asyncio.sleep(answer.wait_s) if answer.wait_s is not None else backoff.sleep())
        if sent and (result.outcome == "retryable" or (result.outcome == "declined" and result.reference is None)):
            # a refundCreate of this series may have been made: only a refund object decides, never a refusal
            result = unknown(f"a refundCreate was sent without an answer; then {result.error}")
        if result.outcome != "paid":
            log.warning(
                "shopify refund without a final answer",
                idempotency_key=idempotency_key,
                outcome=result.outcome,
                error=result.error,
            )
        return result

    async def _attempt(
        self,
        gid: str,
        key: str,
        amount: int,
        currency: str,
        note: str,
        reference: str | None,
        sent: bool,
    ) -> _Answer:
        got = await self._graphql(ORDER_QUERY, {"id": gid}, mutation=False)
        if got.result is not None:
            return got
        order = (got.data or {}).get("order")
        if not isinstance(order, dict):
            return _Answer(declined(f"Shopify has no order {gid} (or the token cannot read it: read_orders)"))
        found = find_refund(order, key, reference)
        if found is not None:
            return _Answer(refund_outcome(found, amount, currency))
        if sent and not self.idempotent:
            return _Answer(unknown("a refundCreate was sent without an answer and is not on the order yet"))
        if str(order.get("presentmentCurrencyCode") or currency) != currency:
            return _Answer(
                declined(f"Shopify order {gid} was paid in {order.get('presentmentCurrencyCode')}, not {currency}")
            )
        try:
            parent = parent_transaction(order, amount, currency)
        except ValueError as exc:
            return _Answer(declined(f"Shopify order {gid}: {exc}"))
        if parent is None:
            return _Answer(declined(f"Shopify order {gid} has no successful SALE or CAPTURE transaction to refund"))
        variables = {"input": refund_input(order, parent, amount, currency, note, self.notify)}
        made = await self._graphql(refund_mutation(key if self.idempotent else None), variables, mutation=True)
        if made.result is not None:
            return made
        payload = (made.data or {}).get("refundCreate")
        if not isinstance(payload, dict):
            return _Answer(unknown("Shopify's refundCreate answer has no payload"), uncertain=True)
        if payload.get("userErrors"):
            return _Answer(declined(f"Shopify refused the refund: {user_errors(payload['userErrors'])}"))
        refund = payload.get("refund")
        if not isinstance(refund, dict) or not refund.get("id"):
            return _Answer(unknown("Shopify's refundCreate answered no refund and no userErrors"), uncertain=True)
        return _Answer(refund_outcome(refund, amount, currency))

    async def _graphql(self, query: str, variables: dict[str, Any], mutation: bool) -> _Answer:
        body = orjson.dumps({"query": query, "variables": variables})
        headers = {
            "content-type": "application/json",
            "accept": "application/json",
            TOKEN_HEADER.lower(): self.access_token,
        }
        try:
            status, got, raw = await self.pool.send("POST", self.path, headers, body, self.timeout_s)
        except TimeoutError:
            what = f"Shopify did not answer within {self.timeout_s}s"
            return _Answer(unknown(what), uncertain=True) if mutation else _Answer(retryable(what))
        except ConnectionRefusedError:
            return _Answer(retryable("Shopify unreachable (connection refused)"))
        except (OSError, h11.ProtocolError) as exc:
            what = f"Shopify unreachable ({type(exc).__name__})"
            return _Answer(unknown(what), uncertain=True) if mutation else _Answer(retryable(what))
        answer = classify(status, got, json_object(raw), mutation)
        if status in (401, 403):
            log.error("shopify refused the access token", status=status)  # the token itself is never logged
        return answer

    async def close(self) -> None:
        await self.pool.close()
