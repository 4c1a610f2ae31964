"""Per-shop settings: the shops file (RETURNFLOW_SHOPS_FILE, YAML).

Every service reads the same file. A shop listed there overrides, for that shop only, what the
environment sets for all: its display name (the SMS signature and the customer page's title), default
locale and time zone, SMS sender, platform credentials, refund provider and its credentials, authority
and early-refund policy, return window, exchange policy and the merchant's webhook endpoints. A shop not
listed, and any key a listed shop leaves out, keeps the environment's value.

A bad file stops a service from starting, in one line naming the shop and the key. While running, each
service checks the file every `shops_reload_interval_s` and takes a changed, valid file without a
restart (and logs `shops file reloaded`); a changed file that does not validate is refused (logged with
the same line) and the previous one stays in force.

    shops:
      demo-shop:
        name: Demo Shop
        locale: zh-CN
        timezone: Asia/Shanghai
        sms: {sender: DemoShop}
        refunds:
          provider: stripe
          stripe: {api_key: sk_test_..., webhook_secret: whsec_..., base_url: http://127.0.0.1:12111}
          authority: {preset: tiered}
          early_refund: {enabled: true, cap: {CNY: 30000}, max_clawbacks: 0}
          return_window_days: 30
        exchanges: {ship_at_first_scan: true}
        webhooks:
          - {url: https://merchant.example/returnflow, secret: whsec_..., events: [refund.paid]}
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, ValidationError

from returnflow.logging import get_logger
from returnflow.signing import standard_key

log = get_logger("returnflow.shops")

ShopId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sms(Strict):
    # The sender the provider shows: Twilio's From number, Aliyun's SignName. None: the environment's.
    sender: str | None = Field(default=None, min_length=1, max_length=32)


class ShopifyPlatform(Strict):
    """A Shopify shop: its `*.myshopify.com` domain (matched against X-Shopify-Shop-Domain), an Admin API
    access token with read_orders, read_returns and write_orders, and the app's webhook secret."""

    domain: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*\.myshopify\.com$")
    access_token: SecretStr
    webhook_secret: SecretStr | None = None
    # 2026-01 or later: refundCreate takes @idempotent (a lost answer is never paid twice by a retry)
    api_version: str = Field(default="2026-01", pattern=r"^\d{4}-\d{2}$")
    # Where the Admin API is; default https://<domain>. Point it at a local server to test.
    api_base_url: str | None = None

    def admin_url(self) -> str:
        base = self.api_base_url or f"https://{self.domain}"
        return f"{base.rstrip('/')}/admin/api/{self.api_version}/graphql.json"


class Platform(Strict):
    kind: Literal["generic", "shopify"] = "generic"
    shopify: ShopifyPlatform | None = None


class Stripe(Strict):
    api_key: SecretStr
    webhook_secret: SecretStr | None = None
    base_url: str = "https://api.stripe.com"


class Alipay(Strict):
    app_id: str
    app_private_key: SecretStr
    public_key: str
    gateway_url: str = "https://openapi.alipay.com/gateway.do"


class Authority(Strict):
    preset: Literal["tiered", "full_trust", "custom"] = "tiered"
    # custom: currency -> role -> cumulative limit per return in minor units (null = unlimited)
    limits: dict[Currency, dict[str, int | None]] = Field(default_factory=dict)


class EarlyRefund(Strict):
    enabled: bool | None = None
    cap: dict[Currency, Annotated[int, Field(ge=0)]] | None = None
    max_clawbacks: int | None = Field(default=None, ge=0)


class Refunds(Strict):
    provider: Literal["simulated", "stripe", "alipay", "shopify"] | None = None
    stripe: Stripe | None = None
    alipay: Alipay | None = None
    authority: Authority | None = None
    early_refund: EarlyRefund | None = None
    return_window_days: int | None = Field(default=None, ge=1)


class Exchanges(Strict):
    # Ship the replacement at the parcel's first moving scan, before the goods arrive — under the same
    # cap, clawback gate and return window as the early refund (refunds.early_refund). None: the
    # environment's (RETURNFLOW_REFUNDS_EXCHANGE_SHIP_AT_FIRST_SCAN, default false: after receipt).
    ship_at_first_scan: bool | None = None


# The status changes a merchant's endpoint can hear of (notify sends them: services/notify/webhook_rules.py).
MerchantEvent = Literal[
    "return.requested",
    "return.cancelled",
    "return.received",
    "return.rejected",
    "refund.paid",
    "refund.failed",
    "return.needs_person",
    "return.discrepancy",
    "exchange.replacement_shipped",
]


class WebhookEndpoint(Strict):
    """A merchant's endpoint for signed status changes (Standard Webhooks)."""

    url: str = Field(pattern=r"^https?://")
    secret: SecretStr  # whsec_<base64>, as Standard Webhooks libraries generate it
    events: list[MerchantEvent] | None = None  # None: all of them


DEFAULT_ESCALATION_SLA_HOURS = 4.0  # a shop not listed, or listed without escalation_sla_hours


class Shop(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=64)
    # How long an escalated refund may wait for a supervisor or manager before on-call is told (alert
    # ReturnflowEscalationsOverSla, backlog escalations_over_sla).
    escalation_sla_hours: float | None = Field(default=None, gt=0, le=24 * 30)
    locale: Literal["zh-CN", "en", "es"] | None = None
    timezone: str | None = None
    sms: Sms = Sms()
    platform: Platform = Platform()
    refunds: Refunds = Refunds()
    exchanges: Exchanges = Exchanges()
    webhooks: list[WebhookEndpoint] = Field(default_factory=list)


class ShopsDocument(Strict):
    shops: dict[ShopId, Shop] = Field(default_factory=dict)


class ShopsFileError(ValueError):
    """The shops file cannot be used; the message names the file, the shop and the key."""


def _where(loc: tuple[int | str, ...]) -> str:
    if len(loc) >= 2 and loc[0] == "shops":
        shop, rest = loc[1], loc[2:]
        if rest == ("[key]",):
            return f"shop id {shop!r}"
        key = ".".join(str(p) for p in rest)
        return f"shop {shop!r}" + (f": {key}" if key else "")
    return ".".join(str(p) for p in loc) or "(top level)"


def parse_shops(text: str, source: str = "shops file") -> dict[str, Shop]:
    """Shops by id from the YAML text; ShopsFileError naming the shop and the key on anything wrong."""
    try:
        raw = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        raise ShopsFileError(f"{source}: not valid YAML{at}: {getattr(e, 'problem', e)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ShopsFileError(f"{source}: expected a mapping with the key 'shops'")
    try:
        doc = ShopsDocument.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise ShopsFileError(f"{source}: {_where(tuple(first['loc']))}: {first['msg']}{more}") from None
    for shop_id, shop in doc.shops.items():
        _check_consistency(source, shop_id, shop)
    return dict(doc.shops)


def _check_consistency(source: str, shop_id: str, shop: Shop) -> None:
    def fail(key: str, msg: str) -> None:
        raise ShopsFileError(f"{source}: shop {shop_id!r}: {key}: {msg}")

    r = shop.refunds
    if r.provider == "stripe" and r.stripe is None:
        fail("refunds.stripe", "provider stripe needs refunds.stripe.api_key")
    if r.provider == "alipay" and r.alipay is None:
        fail("refunds.alipay", "provider alipay needs refunds.alipay (app_id, app_private_key, public_key)")
    if r.provider == "shopify" and shop.platform.shopify is None:
        fail("refunds.provider", "provider shopify needs platform.shopify (domain, access_token)")
    if shop.platform.kind == "shopify" and shop.platform.shopify is None:
        fail("platform.shopify", "platform kind shopify needs platform.shopify (domain, access_token)")
    if r.authority is not None and r.authority.preset == "custom" and not r.authority.limits:
        fail("refunds.authority.limits", "preset custom needs limits (currency -> role -> limit)")
    urls = [w.url for w in shop.webhooks]
    for i, w in enumerate(shop.webhooks):
        if w.url in urls[:i]:
            fail(f"webhooks.{i}.url", f"{w.url} is listed twice (one endpoint per URL, with its events)")
        try:
            standard_key(w.secret.get_secret_value())
        except ValueError as e:
            fail(f"webhooks.{i}.secret", str(e))
    if shop.timezone is not None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(shop.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            fail("timezone", f"unknown time zone {shop.timezone!r}")


def load_shops(path: Path | None) -> dict[str, Shop]:
    if path is None:
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ShopsFileError(f"shops file {path}: cannot be read: {e.strerror or e}") from None
    return parse_shops(text, f"shops file {path}")


@dataclass
class Shops:
    """The shops in force. `get(shop_id)` is None for a shop not listed (the environment's defaults apply).
    `on_change` callbacks run after a reload (e.g. refunds rebuilds a shop's payment provider)."""

    path: Path | None = None
    shops: Mapping[str, Shop] = field(default_factory=dict)
    version: str = ""
    on_change: list[Callable[[Mapping[str, Shop]], None]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path | None) -> Shops:
        shops = load_shops(path)
        return cls(path, shops, _digest(path))

    def get(self, shop_id: str | None) -> Shop | None:
        return self.shops.get(shop_id) if shop_id else None

    def escalation_slas_s(self) -> tuple[list[str], list[float]]:
        """(shop ids, their escalation SLA in seconds) of the shops that set one; others have the default."""
        listed = [(k, v.escalation_sla_hours) for k, v in self.shops.items() if v.escalation_sla_hours is not None]
        return [k for k, _ in listed], [h * 3600 for _, h in listed if h is not None]

    def by_shopify_domain(self, domain: str) -> tuple[str, Shop] | None:
        for shop_id, shop in self.shops.items():
            if shop.platform.shopify is not None and shop.platform.shopify.domain == domain:
                return shop_id, shop
        return None

    def reload(self) -> bool:
        """Take the file again if it changed. True when a new version is in force; a file that does not
        validate is refused and logged, and the previous shops stay."""
        version = _digest(self.path)
        if version == self.version:
            return False
        try:
            shops = load_shops(self.path)
        except ShopsFileError as e:
            log.error("shops file refused, the previous one stays in force", error=str(e))
            self.version = version  # logged once per change, not every check
            return False
        self.shops, self.version = shops, version
        for callback in self.on_change:
            callback(shops)
        log.info("shops file reloaded", path=str(self.path), shops=len(shops))
        return True

    async def check(self) -> float | None:
        """One round of the service's shops worker (returnflow/service.py runs it on its poll)."""
        self.reload()
        return None


def _digest(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "unreadable"


def shop_secret_paths(shops: Mapping[str, Shop], is_dev: Callable[[str], bool]) -> list[str]:
    """Where in the shops file a development secret is used (`shops.<id>.<key>`)."""
    found: list[str] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, SecretStr):
            if is_dev(value.get_secret_value()):
                found.append(path)
        elif isinstance(value, BaseModel):
            for k in type(value).model_fields:
                walk(getattr(value, k), f"{path}.{k}")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{path}.{i}")
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{path}.{k}")

    for shop_id, shop in shops.items():
        walk(shop, f"shops.{shop_id}")
    return found
