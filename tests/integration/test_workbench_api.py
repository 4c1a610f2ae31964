"""The APIs behind the after-sales workbench (issue 15), on the real broker and PostgreSQL: returns search
and the receiving lookup by tracking number; the work queue (escalations, declined refunds, clawbacks,
discrepancies) over HTTP and through `returnflow queue`; deciding a named escalation, resolving a declined
refund and a clawback, each with the person's own token."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx

from services.audit import SPEC as AUDIT
from tests.integration.money_path_support import TOKENS, Platform, auth, platform
from tests.integration.test_audit_dual_check import audit_settings, post_check
from tests.integration.test_decisions_cli import cli, env_for
from tests.kafkautil import read_topic, values, wait_for
from tests.readers import READ, READER_TOKEN

PHONE = "+8613800138000"


async def test_search_returns_and_find_the_parcel_to_receive(settings, service_runner):
    async with platform(settings, service_runner) as p:
        customer = {"id": "c-9", "phone": PHONE, "locale": "zh-CN", "timezone": "Asia/Shanghai"}
        mine = [await p.new_return(order_id="order-wb", customer=customer, tracking_no=f"SF-WB-{i}") for i in range(3)]
        other = await p.new_return(order_id="order-else", tracking_no="SF-WB-X")

        async def search(**params: Any) -> httpx.Response:
            return await p.returns.get("/v1/returns", params=params)

        r = await search()
        assert r.status_code == 422
        assert [f["field"] for f in r.json()["fields"]] == ["order_id", "phone", "tracking_number", "status"]
        r = await search(phone="not a phone")
        assert r.status_code == 422 and r.json()["fields"][0]["field"] == "phone"
        r = await search(order_id="order-wb", cursor="garbage")
        assert r.status_code == 422 and r.json()["fields"][0]["field"] == "cursor"
        r = await p.returns.get("/v1/returns", params={"order_id": "order-wb"}, headers={"authorization": "Bearer x"})
        assert r.status_code == 401

        # the phone as a person types it finds the E.164 number exactly, shown masked; pages oldest first
        found, cursor = [], None
        while True:
            params = {"phone": "+86 138-0013-8000", "limit": 2} | ({"cursor": cursor} if cursor else {})
            body = (await search(**params)).json()
            assert body["counts"] == {"total": 3}
            found += body["returns"]
            if not (cursor := body["next_cursor"]):
                break
        assert [x["return_id"] for x in found] == [str(r) for r in mine]
        assert {x["phone"] for x in found} == {"+86*********00"}  # masked as in every log line
        assert [x["return_id"] for x in (await search(phone="13800138000")).json()["returns"]] == [str(r) for r in mine]
        (one,) = (await search(tracking_number=" SF-WB-X\n")).json()["returns"]
        assert (one["return_id"], one["order_id"], one["tracking_no"]) == (str(other), "order-else", "SF-WB-X")
        both = await search(order_id="order-wb", tracking_number="SF-WB-1")
        assert [x["return_id"] for x in both.json()["returns"]] == [str(mine[1])]
        assert str(other) in [x["return_id"] for x in (await search(status="requested", limit=200)).json()["returns"]]
        assert (await search(status="nonsense")).status_code == 422

        # the receiving screen: a scanned tracking number gives the return and the lines expected back
        async def parcel() -> httpx.Response | None:
            r = await p.warehouse.get("/v1/warehouse/parcels", params={"tracking_number": "SF-WB-2 "})
            return r if r.status_code == 200 else None

        got = (await wait_for(parcel)).json()
        assert (got["return_id"], got["tracking_no"], got["receipt"]) == (str(mine[2]), "SF-WB-2", None)
        assert got["lines"] == [{"line_no": 1, "sku": "SKU-1", "qty": 2, "unit_price": 2000}]
        r = await p.warehouse.get("/v1/warehouse/parcels", params={"tracking_number": "SF-NOPE"})
        assert r.status_code == 404 and r.json()["fields"][0]["field"] == "tracking_number"
        assert (await p.warehouse.get("/v1/warehouse/parcels")).status_code == 422


@contextlib.asynccontextmanager
async def with_audit(settings: Any, service_runner: Any) -> AsyncIterator[tuple[Platform, httpx.AsyncClient]]:
    async with (
        platform(settings, service_runner) as p,
        service_runner(AUDIT, settings, audit_settings()) as audit,
        httpx.AsyncClient(base_url=audit.base_url, headers=READ) as client,
    ):
        yield p, client


async def test_the_work_queue_and_its_decisions_over_http_and_the_cli(settings, service_runner, tmp_path):
    async with with_audit(settings, service_runner) as (p, audit):
        api = p.refunds[0]
        # 1. an automatic 100.00 review for a manager (damaged goods received), then an agent's 30.00 for a supervisor
        esc_rid = await p.new_return(
            tracking_no="SF-Q-1", paid_total=30_000, lines=[{"sku": "SKU-1", "qty": 3, "unit_price": 10_000,
                                                             "reason": "damaged"}]
        )  # fmt: skip
        await wait_for(lambda: parcel_known(p, "SF-Q-1"))
        r = await p.receipt(
            tracking_no="SF-Q-1",
            lines=[
                {"sku": "SKU-1", "qty_received": 1, "condition": "as_described", "disposition": "restock"},
                {"sku": "SKU-1", "qty_received": 1, "condition": "damaged", "disposition": "quarantine"},
            ],
        )
        assert r.status_code == 201, r.text
        await p.wait_issued(esc_rid)  # the undamaged unit's refund
        grant = await api.post(
            f"/v1/refunds/{esc_rid}/decisions",
            json={"action": "grant_free_refund", "amount": 3_000},
            headers=auth("agent-amy"),
        )
        assert grant.status_code == 202 and grant.json()["required_role"] == "supervisor"
        # 2. a clawback: refunded early, then a wrong item came back
        cb_rid = await p.new_return(tracking_no="SF-Q-2", customer={"id": "c-cb", "phone": PHONE})
        await p.scan("SF-Q-2")
        await p.wait_issued(cb_rid)
        r = await p.receipt(
            tracking_no="SF-Q-2",
            lines=[{"sku": "SKU-1", "qty_received": 2, "condition": "wrong_item", "disposition": "quarantine"}],
        )
        assert r.status_code == 201, r.text
        # 3. a refund the gateway declines for good
        await p.gateway.post("/_sim/faults", json={"mode": "decline", "count": 1})
        failed_rid = await p.new_return(tracking_no="SF-Q-3", customer={"id": "c-f", "phone": PHONE})
        await p.scan("SF-Q-3")
        # 4. a dual-check discrepancy: the returns team counts 3 restocked where the warehouse attested 1
        await wait_for(lambda: audit_knows_side(audit, esc_rid))
        r = await post_check(audit, "rt-ana", return_id=esc_rid, sku="SKU-1", movement="restock", quantity=3)
        assert r.status_code == 201 and r.json()["status"] == "discrepancy", r.text

        escalations = (await api.get("/v1/refunds/escalations", headers=READ)).json()
        assert [(e["amount"], e["required_role"]) for e in escalations["escalations"]] == [
            (10_000, "manager"),
            (3_000, "supervisor"),
        ]
        automatic, agents = (e["escalation_id"] for e in escalations["escalations"])
        assert escalations["counts"]["by_required_role"] == {"manager": 1, "supervisor": 1}
        sup = await api.get("/v1/refunds/escalations", params={"role": "supervisor", "max_amount": 5_000}, headers=READ)
        assert [e["escalation_id"] for e in sup.json()["escalations"]] == [agents]
        bad = await api.get("/v1/refunds/escalations", params={"cursor": "x", "min_amount": 1}, headers=READ)
        assert bad.status_code == 422 and bad.json()["fields"][0]["field"] == "cursor"
        failures = await wait_for(lambda: listed(api, "/v1/refunds/failures", "failures"))
        assert [f["return_id"] for f in failures] == [str(failed_rid)]
        (clawback,) = await wait_for(lambda: listed(api, "/v1/refunds/clawbacks", "clawbacks"))
        assert (clawback["return_id"], clawback["status"]) == (str(cb_rid), "open")

        # `returnflow queue`: an ops reader sees every kind, oldest first, with counts
        env = env_for(tmp_path, RETURNFLOW_REFUNDS_URL=str(api.base_url), RETURNFLOW_AUDIT_URL=str(audit.base_url))
        out = await cli(env, "queue", "--token", READER_TOKEN)
        assert out.returncode == 0, out.stderr
        head = out.stdout.splitlines()[0]
        assert head == (
            "work waiting for a person, oldest first: 2 escalations, 1 declined refunds, 1 clawbacks, 1 discrepancies"
        )
        kinds = [line.split()[0] for line in out.stdout.splitlines()[2:]]
        assert sorted(kinds) == ["clawback", "discrepancy", "escalation", "escalation", "failure"]
        assert kinds.index("escalation") < kinds.index("discrepancy")  # the escalation was raised first
        # a supervisor's own token: the refunds work; the audit service does not know it
        sam = {**env, "RETURNFLOW_TOKEN": TOKENS["sup-sam"]}
        out = await cli(sam, "queue", "--kind", "escalation", "--kind", "discrepancy")
        assert out.returncode == 0, out.stderr
        assert "2 escalations" in out.stdout and "discrepancies: not visible with this credential" in out.stdout

        # deciding: a named escalation above the supervisor is refused (exit 1); without a name, the agent's
        out = await cli(sam, "approve", str(esc_rid), "--escalation", automatic)
        assert out.returncode == 1 and "waits for a manager" in out.stderr, out.stderr
        r = await api.post(
            f"/v1/refunds/{esc_rid}/decisions",
            json={"action": "approve", "escalation_id": "no-such-escalation"},
            headers=auth("sup-sam"),
        )
        assert r.status_code == 409 and r.json()["fields"][0]["field"] == "escalation_id"
        out = await cli(sam, "approve", str(esc_rid))
        assert out.returncode == 0 and out.stdout.startswith("done: refunded 3000") and agents in out.stdout
        still = (await api.get("/v1/refunds/escalations", headers=READ)).json()["escalations"]
        assert [e["escalation_id"] for e in still] == [automatic]

        # resolving a clawback: not by an agent; once (a repeat is harmless); another way later is a conflict
        cid = clawback["clawback_id"]
        curl = f"/v1/refunds/clawbacks/{cid}/resolution"
        assert (await api.post(curl, json={"resolution": "waived"}, headers=auth("agent-amy"))).status_code == 403
        out = await cli(sam, "clawback", "resolve", cid, "--resolution", "waived", "--note", "loyal customer")
        assert out.returncode == 0 and "waived" in out.stdout and "sup-sam (supervisor)" in out.stdout, out.stderr
        again = await api.post(curl, json={"resolution": "waived"}, headers=auth("mgr-mia"))
        assert (again.status_code, again.json()["result"], again.json()["resolved_by"]) == (
            200,
            "already_resolved",
            "sup-sam",
        )
        conflict = await api.post(curl, json={"resolution": "written_off"}, headers=auth("mgr-mia"))
        assert conflict.status_code == 409 and conflict.json()["fields"][0]["field"] == "resolution"
        assert (await api.post("/v1/refunds/clawbacks/nope/resolution", json={"resolution": "waived"},
                               headers=auth("sup-sam"))).status_code == 404  # fmt: skip
        assert await listed(api, "/v1/refunds/clawbacks", "clawbacks") is None
        resolved = (await api.get("/v1/refunds/clawbacks", params={"state": "resolved"}, headers=READ)).json()
        assert [c["resolution"] for c in resolved["clawbacks"]] == ["waived"]

        # resolving a declined refund over HTTP: retried once, paid
        url = f"/v1/refunds/{failed_rid}/failures/resolution"
        assert (await api.post(url, json={"action": "retry"}, headers=auth("agent-amy"))).status_code == 403
        assert (await api.post(url, json={"action": "again"}, headers=auth("sup-sam"))).status_code == 422
        first = await api.post(url, json={"action": "retry", "note": "card fixed"}, headers=auth("sup-sam"))
        again = await api.post(url, json={"action": "retry", "note": "card fixed"}, headers=auth("sup-sam"))
        assert (first.status_code, first.json()["result"], again.json()["result"]) == (
            200,
            "resolved",
            "already_resolved",
        )
        assert first.json()["retry_refund_id"] == again.json()["retry_refund_id"]
        await p.wait_issued(failed_rid)
        other = await api.post(f"/v1/refunds/{uuid.uuid4()}/failures/resolution", json={"action": "close"},
                               headers=auth("sup-sam"))  # fmt: skip
        assert other.status_code == 404

        news = values(await read_topic(p.settings.kafka_bootstrap, "refunds.clawbacks-resolved", expect=1))
        assert [(n["clawback_id"], n["resolution"], n["resolved_by"]) for n in news] == [(cid, "waived", "sup-sam")]
        news = values(await read_topic(p.settings.kafka_bootstrap, "refunds.failures-resolved", expect=1))
        assert [(n["return_id"], n["action"], n["resolved_by"]) for n in news] == [
            (str(failed_rid), "retry", "sup-sam")
        ]
        for path, key in (("/v1/refunds/failures", "failures"), ("/v1/refunds/clawbacks", "clawbacks")):
            assert await listed(api, path, key) is None  # resolved work leaves the queue


async def audit_knows_side(audit: httpx.AsyncClient, rid: uuid.UUID) -> bool:
    r = await audit.get(f"/v1/audit/returns/{rid}")
    return r.status_code == 200 and bool(r.json().get("sides"))


async def listed(api: httpx.AsyncClient, path: str, key: str) -> list[dict[str, Any]] | None:
    items: list[dict[str, Any]] = (await api.get(path, headers=READ)).json()[key]
    return items or None


async def parcel_known(p: Platform, tracking_no: str) -> bool:
    r = await p.warehouse.get("/v1/warehouse/parcels", params={"tracking_number": tracking_no})
    return r.status_code == 200
