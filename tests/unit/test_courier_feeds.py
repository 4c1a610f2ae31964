"""Courier tracking feeds, the pure parts: the providers' states onto scan codes (and the documented
table saying the same), checkpoints as scans with ids that survive re-pushes, which checkpoints are new,
and the two signature schemes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from contracts.events import ScanCode
from returnflow.settings import Settings, development_secrets, refuse_development_secrets
from returnflow.signing import SignatureError
from services.warehouse import dev
from services.warehouse.rules import (
    AFTERSHIP_SUBTAGS,
    AFTERSHIP_TAGS,
    KUAIDI100_COMPANIES,
    KUAIDI100_NAMES,
    KUAIDI100_STATES,
    FeedScan,
    Subscribed,
    SubscribeLater,
    SubscriptionRefused,
    aftership_scan_code,
    aftership_scans,
    kuaidi100_scan_code,
    kuaidi100_scans,
    kuaidi100_subscription,
    new_checkpoints,
    subscription_outcome,
    subscription_retry_in,
)
from services.warehouse.schemas import AfterShipWebhook, Kuaidi100Push, ScanWebhook
from services.warehouse.signatures import aftership_sign, aftership_verify, kuaidi100_sign, kuaidi100_verify

DOC = Path(__file__).parents[2] / "docs" / "couriers.md"
ROW = re.compile(r"^\| `([\w-]+)` \| (.+?) \| (.+?) \|")
SCAN_CODE = re.compile(r"`(\w+)`")


def doc_rows(heading: str) -> dict[str, list[str]]:
    """The rows of the table under a heading of docs/couriers.md: first cell -> the other cells."""
    section = DOC.read_text().split(heading, 1)[1].split("\n#", 1)[0]
    return {m.group(1): [m.group(2), m.group(3)] for line in section.splitlines() if (m := ROW.match(line))}


def test_the_documented_tables_are_the_mapping():
    kuaidi100 = doc_rows("### Kuaidi100")
    assert {code: (name, ScanCode(SCAN_CODE.search(cell)[1])) for code, (name, cell) in kuaidi100.items()} == (
        KUAIDI100_STATES
    )
    aftership = doc_rows("### AfterShip")
    documented = {tag: (m := SCAN_CODE.search(cell)) and ScanCode(m[1]) for tag, (cell, _) in aftership.items()}
    assert documented == {**AFTERSHIP_TAGS, **AFTERSHIP_SUBTAGS}


names = st.sampled_from(sorted(KUAIDI100_NAMES))
codes = st.sampled_from(sorted(KUAIDI100_STATES))
unknown = st.text(max_size=8).filter(lambda s: s.strip() not in KUAIDI100_STATES and s.strip() not in KUAIDI100_NAMES)


@given(code=codes)
def test_a_kuaidi100_state_maps_the_same_by_code_or_by_name(code):
    name, scan_code = KUAIDI100_STATES[code]
    assert kuaidi100_scan_code(code) == kuaidi100_scan_code(name) == kuaidi100_scan_code(f" {code} ") == scan_code


@given(state=unknown)
def test_an_unknown_kuaidi100_state_is_not_a_scan(state):
    assert kuaidi100_scan_code(state) is None


def test_pickup_is_moving_and_an_order_is_not():
    assert kuaidi100_scan_code("揽收") == kuaidi100_scan_code("103") == ScanCode.picked_up
    assert kuaidi100_scan_code("已下单") == kuaidi100_scan_code("102") == ScanCode.accepted
    assert kuaidi100_scan_code("退回") == ScanCode.exception  # back to the customer, not to the warehouse


@given(tag=st.sampled_from(sorted(AFTERSHIP_TAGS)), subtag=st.text(max_size=20))
def test_an_aftership_subtag_refines_its_tag_only_where_the_table_says(tag, subtag):
    expected = AFTERSHIP_SUBTAGS.get(subtag, AFTERSHIP_TAGS[tag])
    assert aftership_scan_code(tag, subtag) == expected
    assert aftership_scan_code(tag, None) == AFTERSHIP_TAGS[tag]


# -- Kuaidi100 pushes ------------------------------------------------------------------------------------

T0 = datetime(2026, 11, 1, 8, 0)
checkpoints = st.lists(
    st.builds(
        lambda minutes, context, state: {
            "ftime": (T0 + timedelta(minutes=minutes)).strftime("%Y-%m-%d %H:%M:%S"),
            "context": context,
            **({"status": state} if state else {}),
        },
        st.integers(0, 60 * 24 * 30),
        st.text(max_size=30),
        st.one_of(st.none(), names, codes, unknown),
    ),
    max_size=12,
)


def push(data, state="0", nu="SF1402918820461"):
    return Kuaidi100Push.model_validate(
        {"status": "polling", "lastResult": {"nu": nu, "com": "shunfeng", "state": state, "data": data}}
    )


def checkpoint_id_of(c):
    """A checkpoint's id when it is pushed alone with a known state."""
    (scan,) = kuaidi100_scans(push([dict(c, status="在途", statusCode=None)])).scans
    return scan.scan_id


@given(old=checkpoints, newer=checkpoints, state=st.one_of(codes, unknown))
def test_a_repush_of_the_history_records_only_the_newer_checkpoints(old, newer, state):
    first = {s.scan_id for s in kuaidi100_scans(push(old, state)).scans}
    second = kuaidi100_scans(push(newer + old, state)).scans
    fresh = new_checkpoints(second, first)
    assert {s.scan_id for s in fresh} <= {checkpoint_id_of(c) for c in newer}
    # a checkpoint's id does not depend on what else the push holds, nor on its state
    by_time_and_text = {(c["ftime"], c["context"]): checkpoint_id_of(c) for c in newer + old}
    assert {s.scan_id for s in second} <= set(by_time_and_text.values())


@given(data=checkpoints, state=st.one_of(codes, unknown))
def test_every_checkpoint_is_a_scan_in_beijing_time_or_skipped(data, state):
    feed = kuaidi100_scans(push(data, state))
    assert len(feed.scans) + len(feed.unmapped) == len(data)
    for s in feed.scans:
        assert s.carrier == "shunfeng" and s.body.tracking_no == "SF1402918820461"
        assert s.body.scanned_at.utcoffset() == timedelta(hours=8)
        assert s.scan_id.startswith("kuaidi100:")
    mapped = [c for i, c in enumerate(data) if kuaidi100_scan_code(c.get("status")) or (i == 0 and _known(state))]
    assert [s.body.scanned_at.strftime("%Y-%m-%d %H:%M:%S") for s in feed.scans] == [c["ftime"] for c in mapped]


def _known(state):
    return kuaidi100_scan_code(state) is not None


def test_the_detailed_state_wins_over_the_name_and_the_push_state():
    p = push([{"ftime": "2026-11-22 09:30:12", "context": "x", "status": "揽收", "statusCode": "102"}], state="3")
    (scan,) = kuaidi100_scans(p).scans
    assert scan.body.scan_code == ScanCode.accepted


# -- AfterShip webhooks ---------------------------------------------------------------------------------


def hook(checkpoints):
    return AfterShipWebhook.model_validate(
        {"event": "tracking_update", "msg": {"tracking_number": "1Z9", "slug": "ups", "tag": "InTransit"}}
        | {"msg": {"tracking_number": "1Z9", "slug": "ups", "tag": "InTransit", "checkpoints": checkpoints}}
    )


def test_aftership_uses_the_carriers_time_with_its_offset_else_when_aftership_saw_it():
    created = "2026-11-22T17:31:05+00:00"
    feed = aftership_scans(
        hook(
            [
                {"checkpoint_time": "2026-11-22T09:30:00-08:00", "created_at": created, "tag": "InTransit"},
                {"checkpoint_time": "2026-11-22T09:30:00", "created_at": created, "tag": "Delivered"},
                {"checkpoint_time": "2026-11-22", "tag": "Exception"},  # no offset and no created_at
                {"checkpoint_time": "2026-11-22T10:00:00+00:00", "tag": "Pending"},
            ]
        )
    )
    assert [(s.body.scanned_at.astimezone(UTC), s.body.scan_code) for s in feed.scans] == [
        (datetime(2026, 11, 22, 17, 30, tzinfo=UTC), ScanCode.in_transit),
        (datetime(2026, 11, 22, 17, 31, 5, tzinfo=UTC), ScanCode.delivered),
    ]
    assert feed.unmapped == ["msg.checkpoints.2: Exception (no time with an offset)", "msg.checkpoints.3: Pending"]


# -- which checkpoints are new -------------------------------------------------------------------------

SCAN = ScanWebhook(tracking_no="SF1", scan_code=ScanCode.picked_up, scanned_at=datetime(2026, 11, 22, tzinfo=UTC))
ids = st.lists(st.sampled_from([f"k:{i}" for i in range(8)]), max_size=16)


@given(pushed=ids, recorded=st.sets(st.sampled_from([f"k:{i}" for i in range(8)])))
def test_new_checkpoints_are_those_never_recorded_each_once_in_order(pushed, recorded):
    scans = [FeedScan(i, "sf", SCAN) for i in pushed]
    new = [s.scan_id for s in new_checkpoints(scans, recorded)]
    assert len(new) == len(set(new)) and not set(new) & recorded
    assert set(new) == set(pushed) - recorded
    assert new == sorted(new, key=pushed.index)
    assert new_checkpoints([FeedScan(i, "sf", SCAN) for i in new], set(new)) == []  # a second push: nothing


# -- signatures -----------------------------------------------------------------------------------------

secrets = st.text(min_size=1, max_size=40)
params = st.text(max_size=300)


@given(param=params, salt=secrets, other=secrets)
def test_a_kuaidi100_sign_is_uppercase_md5_of_param_and_salt_either_case_accepted(param, salt, other):
    sign = hashlib.md5((param + salt).encode()).hexdigest().upper()
    assert kuaidi100_sign(param, salt) == sign
    kuaidi100_verify(sign, param, [other, salt])
    kuaidi100_verify(sign.lower(), param, [salt])
    if other != salt:
        with pytest.raises(SignatureError, match="does not match"):
            kuaidi100_verify(sign, param, [other])
    with pytest.raises(SignatureError, match="does not match"):
        kuaidi100_verify(sign, param + " ", [salt])
    with pytest.raises(SignatureError, match="missing"):
        kuaidi100_verify(None, param, [salt])


@given(body=st.binary(max_size=500), secret=secrets, other=secrets, pos=st.integers(0, 499), bit=st.integers(0, 7))
def test_an_aftership_signature_is_the_base64_hmac_of_the_raw_body(body, secret, other, pos, bit):
    header = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    assert aftership_sign(body, secret) == header
    aftership_verify(header, body, [other, secret])
    if body:
        tampered = bytearray(body)
        tampered[pos % len(body)] ^= 1 << bit
        with pytest.raises(SignatureError, match="does not match"):
            aftership_verify(header, bytes(tampered), [secret])
    with pytest.raises(SignatureError, match="missing"):
        aftership_verify("", body, [secret])


# -- Kuaidi100 subscriptions ------------------------------------------------------------------------------

return_codes = st.one_of(
    st.sampled_from(["200", "400", "500", "501", "502", "503", "600", "601", "700", "701"]), st.text(max_size=4)
)


@given(status=st.one_of(st.none(), st.integers(100, 599)), code=return_codes, message=st.text(max_size=20))
def test_a_subscription_is_made_kept_for_later_or_refused_by_kuaidi100s_answer(status, code, message):
    outcome = subscription_outcome(status, {"result": code == "200", "returnCode": code, "message": message})
    if status is None or status >= 500 or status == 429:
        assert isinstance(outcome, SubscribeLater)  # no usable answer: never given up on
    elif code in ("200", "501"):  # made now, or made before (a repeat)
        assert isinstance(outcome, Subscribed)
    elif code in ("500", "502", "503", "600", "601"):  # Kuaidi100's trouble, or a key the operator must fix
        assert isinstance(outcome, SubscribeLater) and outcome.error.startswith(code)
    else:
        assert isinstance(outcome, SubscriptionRefused)


@given(attempts=st.integers(0, 10_000), base=st.floats(0.01, 600))
def test_a_subscription_is_asked_again_later_and_later_within_an_hour(attempts, base):
    wait = subscription_retry_in(attempts, base)
    assert min(base, 3600) <= wait <= 3600
    assert subscription_retry_in(attempts + 1, base) >= wait


@given(carrier=st.one_of(st.none(), st.sampled_from(sorted(KUAIDI100_COMPANIES)), st.text(max_size=10)))
def test_a_subscription_names_kuaidi100s_company_or_asks_it_to_recognise_the_number(carrier):
    param = kuaidi100_subscription("SF1402918820461", carrier, "key", "https://x/cb", "salt")
    assert param["number"] == "SF1402918820461" and param["key"] == "key"
    parameters = param["parameters"]
    assert isinstance(parameters, dict)
    assert {k: parameters[k] for k in ("callbackurl", "salt", "resultv2")} == {
        "callbackurl": "https://x/cb",
        "salt": "salt",
        "resultv2": "4",  # every checkpoint with its detailed state
    }
    if carrier in KUAIDI100_COMPANIES:
        assert param["company"] == KUAIDI100_COMPANIES[carrier] and "autoCom" not in parameters
    elif param["company"] == "":
        assert parameters["autoCom"] == "1"
    else:
        assert param["company"] == carrier and "autoCom" not in parameters


def test_the_feeds_development_secrets_stop_a_service_outside_the_local_stack():
    local = dev.dev_settings(kuaidi100_key=SecretStr("dev-kuaidi100-key"))
    assert {
        "RETURNFLOW_WAREHOUSE_KUAIDI100_SALTS (0)",
        "RETURNFLOW_WAREHOUSE_AFTERSHIP_WEBHOOK_SECRETS (0)",
        "RETURNFLOW_WAREHOUSE_KUAIDI100_KEY",
    } <= set(development_secrets(local))
    with pytest.raises(SystemExit, match="RETURNFLOW_WAREHOUSE_KUAIDI100_SALTS"):
        refuse_development_secrets(Settings(dev_stack=False), local)
    own = dev.dev_settings(
        kuaidi100_salts=[SecretStr("7c1f0b5e2a9d4c36")], aftership_webhook_secrets=[SecretStr("as-live-secret")]
    )
    assert not [s for s in development_secrets(own) if "KUAIDI100" in s or "AFTERSHIP" in s]
