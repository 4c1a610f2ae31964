"""The shops file: a bad one names the shop and the key; a changed one is taken without a restart, a bad
change is refused and the previous shops stay in force; development secrets in it are found."""

from __future__ import annotations

from pathlib import Path

import pytest

from returnflow.service import load_shops_or_exit
from returnflow.settings import Settings
from returnflow.shops import Shops, ShopsFileError, parse_shops

GOOD = """
shops:
  demo-shop:
    name: Demo Shop
    locale: zh-CN
    timezone: Asia/Shanghai
    sms: {sender: DemoShop}
    refunds:
      provider: stripe
      stripe: {api_key: sk_test_123, webhook_secret: whsec_abc, base_url: "http://127.0.0.1:1"}
      authority: {preset: custom, limits: {CNY: {agent: 10000, supervisor: null}}}
      early_refund: {enabled: true, cap: {CNY: 30000}, max_clawbacks: 1}
      return_window_days: 30
    exchanges: {ship_at_first_scan: true}
    webhooks:
      - {url: "https://merchant.example/hooks", secret: whsec_c2VjcmV0, events: [refund.paid]}
  other-shop: {}
"""


def test_a_good_file_gives_each_shop_its_settings() -> None:
    shops = parse_shops(GOOD)
    demo = shops["demo-shop"]
    assert demo.name == "Demo Shop" and demo.locale == "zh-CN" and demo.sms.sender == "DemoShop"
    assert demo.refunds.provider == "stripe" and demo.refunds.stripe is not None
    assert demo.refunds.stripe.api_key.get_secret_value() == "sk_test_123"
    assert demo.refunds.early_refund is not None and demo.refunds.early_refund.cap == {"CNY": 30000}
    assert demo.exchanges.ship_at_first_scan is True
    assert demo.webhooks[0].events == ["refund.paid"]
    other = shops["other-shop"]  # listed with nothing: every key keeps the environment's value
    assert other.name is None and other.refunds.provider is None and other.webhooks == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("shops:\n  s1:\n    refunds: {early_refund: {cap: {CNY: -5}}}\n", "shop 's1': refunds.early_refund.cap.CNY:"),
        ("shops:\n  s1:\n    refunds: {provider: paypal}\n", "shop 's1': refunds.provider:"),
        ("shops:\n  s1:\n    smss: {}\n", "shop 's1': smss: Extra inputs are not permitted"),
        ("shops:\n  s1:\n    locale: fr\n", "shop 's1': locale:"),
        ("shops:\n  s1:\n    timezone: Mars/Olympus\n", "shop 's1': timezone: unknown time zone 'Mars/Olympus'"),
        ("shops:\n  s1:\n    refunds: {provider: stripe}\n", "shop 's1': refunds.stripe: provider stripe needs"),
        ("shops:\n  s1:\n    refunds: {provider: shopify}\n", "shop 's1': refunds.provider: provider shopify needs"),
        ("shops:\n  s1:\n    webhooks: [{url: ftp://x, secret: whsec_x}]\n", "shop 's1': webhooks.0.url:"),
        ("shops:\n  s1:\n    webhooks: [{url: 'https://x', secret: s, events: [nope]}]\n", "webhooks.0.events.0:"),
        (
            "shops:\n  s1:\n    webhooks: [{url: 'https://x', secret: 'whsec_no base64!'}]\n",
            "shop 's1': webhooks.0.secret: a whsec_ secret must be base64",
        ),
        (
            "shops:\n  s1:\n    webhooks: [{url: 'https://x', secret: a}, {url: 'https://x', secret: b}]\n",
            "shop 's1': webhooks.1.url: https://x is listed twice",
        ),
        ("shops:\n  'bad shop':\n    name: x\n", "shop id 'bad shop': String should match"),
        ("shops: [1, 2]\n", "shops: Input should be a valid dictionary"),
        ("- just a list\n", "expected a mapping with the key 'shops'"),
        ("shops:\n  s1: {name: [unclosed\n", "not valid YAML (line"),
    ],
)
def test_a_bad_file_is_refused_naming_the_shop_and_the_key(text: str, message: str) -> None:
    with pytest.raises(ShopsFileError) as e:
        parse_shops(text, "shops file x.yaml")
    assert str(e.value).startswith("shops file x.yaml: ")
    assert message in str(e.value)


def test_secrets_never_show_in_the_model_repr() -> None:
    assert "sk_test_123" not in repr(parse_shops(GOOD))


def test_a_changed_file_is_taken_and_a_bad_change_refused(tmp_path: Path) -> None:
    path = tmp_path / "shops.yaml"
    path.write_text("shops:\n  s1: {name: First}\n")
    shops = Shops.load(path)
    seen: list[int] = []
    shops.on_change.append(lambda new: seen.append(len(new)))
    assert shops.reload() is False  # unchanged
    path.write_text("shops:\n  s1: {name: Second}\n  s2: {}\n")
    assert shops.reload() is True
    got = shops.get("s1")
    assert got is not None and got.name == "Second" and seen == [2]
    path.write_text("shops:\n  s1: {name: Third, refunds: {provider: paypal}}\n")
    assert shops.reload() is False  # refused: the previous shops stay in force
    got = shops.get("s1")
    assert got is not None and got.name == "Second" and shops.get("s2") is not None and seen == [2]
    path.write_text("shops:\n  s1: {name: Fourth}\n")  # fixed: taken
    assert shops.reload() is True
    got = shops.get("s1")
    assert got is not None and got.name == "Fourth" and shops.get("s2") is None


def test_no_file_means_no_shops_and_an_unreadable_one_stops_the_start(tmp_path: Path) -> None:
    assert load_shops_or_exit(Settings(dev_stack=True)).shops == {}
    with pytest.raises(SystemExit) as e:
        load_shops_or_exit(Settings(dev_stack=True, shops_file=tmp_path / "missing.yaml"))
    assert "missing.yaml: cannot be read" in str(e.value)


def test_development_secrets_in_the_file_stop_a_production_start(tmp_path: Path) -> None:
    path = tmp_path / "shops.yaml"
    path.write_text("shops:\n  s1:\n    refunds: {provider: stripe, stripe: {api_key: dev-stripe-key}}\n")
    with pytest.raises(SystemExit) as e:
        load_shops_or_exit(Settings(dev_stack=False, shops_file=path))
    assert "shops.s1.refunds.stripe.api_key" in str(e.value) and "dev-stripe-key" not in str(e.value)
    assert load_shops_or_exit(Settings(dev_stack=True, shops_file=path)).get("s1") is not None


def test_a_shopify_shop_is_found_by_its_domain() -> None:
    shops = Shops(
        shops=parse_shops(
            "shops:\n  s1:\n    platform: {kind: shopify, shopify: {domain: a-b.myshopify.com, access_token: shpat_x}}\n"
        )
    )
    found = shops.by_shopify_domain("a-b.myshopify.com")
    assert found is not None and found[0] == "s1"
    assert shops.by_shopify_domain("other.myshopify.com") is None


def test_what_the_platform_left_out_comes_from_the_shop_and_what_it_sent_is_kept() -> None:
    from services.returns.rules import with_shop_defaults
    from services.returns.schemas import ReturnWebhook
    from tests.webhooks import return_body

    shop = parse_shops("shops:\n  s1: {name: Tienda Sol, locale: es, timezone: America/Mexico_City}\n")["s1"]
    bare = ReturnWebhook.model_validate(return_body(shop_id="s1", customer={"id": "c-1", "phone": "+8613812345678"}))
    assert (bare.customer.locale, bare.customer.timezone, bare.shop_name) == (None, None, None)
    filled = with_shop_defaults(bare, shop)
    assert (filled.customer.locale, filled.customer.timezone, filled.shop_name) == (
        "es",
        "America/Mexico_City",
        "Tienda Sol",
    )
    assert with_shop_defaults(bare, None).customer.locale == "zh-CN"  # no shop: the platform-wide default
    sent = ReturnWebhook.model_validate(return_body(shop_id="s1", shop_name="Sol MX"))
    kept = with_shop_defaults(sent, shop)
    assert (kept.customer.locale, kept.customer.timezone, kept.shop_name) == ("zh-CN", "Asia/Shanghai", "Sol MX")
