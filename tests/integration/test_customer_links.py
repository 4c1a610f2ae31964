"""The customer's link over HTTP, against the returns service on the real broker and PostgreSQL: a person
revokes it (API and `returnflow link revoke`, attributed, idempotent) and it then answers the localized
"no longer valid" page (410) to a GET and to the tracking form; the tracking form is rate limited per
return (429 with Retry-After) whatever the submissions say."""

from __future__ import annotations

import re
import uuid

import httpx
from pydantic import SecretStr

from returnflow.links import link_token
from services.returns import SPEC
from tests.integration.test_decisions_cli import cli, env_for
from tests.readers import READ, READER_TOKEN
from tests.webhooks import return_body, signed

SECRET = "test-customer-link-secret"


async def new_return(client: httpx.AsyncClient, **over: object) -> uuid.UUID:
    raw, h = signed(return_body(**over))
    r = await client.post("/v1/webhooks/generic/returns", content=raw, headers=h)
    assert r.status_code == 202, r.text
    return uuid.UUID(r.json()["return_id"])


async def test_a_revoked_link_answers_no_longer_valid_and_the_revocation_is_attributed(
    settings, service_runner, tmp_path
):
    s = settings.model_copy(update={"customer_link_secret": SecretStr(SECRET)})
    async with service_runner(SPEC, s) as svc, httpx.AsyncClient(base_url=svc.base_url) as client:
        rid = await new_return(client)
        other = await new_return(client)
        page = f"/r/{link_token(SECRET.encode(), rid)}"
        assert (await client.get(page)).status_code == 200
        revocation = f"/v1/returns/{rid}/links/revocation"

        # a person's action: no token, no revocation (and the link still works)
        r = await client.post(revocation)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        r = await client.post(revocation, headers={"authorization": "Bearer not-a-known-token"})
        assert r.status_code == 401
        assert (await client.get(page)).status_code == 200
        # an unknown return is named, a malformed id is no return either
        unknown = uuid.uuid4()
        r = await client.post(f"/v1/returns/{unknown}/links/revocation", headers=READ)
        assert r.status_code == 404 and str(unknown) in r.json()["detail"]
        assert (await client.post("/v1/returns/nope/links/revocation", headers=READ)).status_code == 404

        # the CLI, through the API, with the person's own token: revoked, by the token's holder
        env = env_for(tmp_path, RETURNFLOW_RETURNS_URL=svc.base_url, RETURNFLOW_TOKEN=READER_TOKEN)
        out = await cli(env, "link", "revoke", str(rid))
        assert out.returncode == 0, (out.stdout, out.stderr)
        assert out.stdout.startswith(f"revoked: the customer link of return {rid}") and "by ops-test" in out.stdout

        # the page: 410 and the plain page in the customer's language, nothing of the return
        r = await client.get(page, headers={"accept-language": "en"})
        assert r.status_code == 410 and 'lang="zh-CN"' in r.text and "此链接已失效" in r.text
        assert "order-1" not in r.text and "SKU-1" not in r.text
        form = {"carrier": "sf", "tracking_no": "SF1400223399", "submission_id": "s1"}
        assert (await client.post(page, data=form)).status_code == 410

        # again: harmless, names the first revocation
        r = await client.post(revocation, headers=READ)
        assert r.status_code == 200
        first = r.json()
        assert first["already_revoked"] is True and first["revoked_by"] == "ops-test"

        # on the return's timeline, once, attributed
        entries = (await client.get(f"/v1/returns/{rid}/timeline", headers=READ)).json()["entries"]
        assert [e["summary"] for e in entries if e["type"] == "link.revoked"] == ["customer link revoked by ops-test"]

        # another customer's link is untouched
        assert (await client.get(f"/r/{link_token(SECRET.encode(), other)}")).status_code == 200


async def test_the_tracking_form_is_rate_limited_per_return(settings, service_runner):
    s = settings.model_copy(update={"customer_link_secret": SecretStr(SECRET)})
    async with service_runner(SPEC, s) as svc, httpx.AsyncClient(base_url=svc.base_url) as client:
        rid = await new_return(client)  # a parcel expected, no tracking number known: the form is shown
        page = f"/r/{link_token(SECRET.encode(), rid)}"
        first, again = (await client.get(page)).text, (await client.get(page)).text
        assert 'name="tracking_no"' in first
        # a page shown again (from the render cache) gets a submission id of its own: a one-time form
        ids = [re.search(r'name="submission_id" value="([0-9a-f]{32})"', t) for t in (first, again)]
        assert ids[0] and ids[1] and ids[0].group(1) != ids[1].group(1)
        assert first.replace(ids[0].group(1), "") == again.replace(ids[1].group(1), "")
        limit = SPEC.settings().tracking_attempts
        for n in range(limit):
            r = await client.post(page, data={"carrier": "sf", "tracking_no": "12", "submission_id": f"s{n}"})
            assert r.status_code == 422, r.text  # named next to its field
            assert 'id="tracking-err"' in r.text
        # the next one is refused before it is looked at, even a valid one, and says when to try again
        good = {"carrier": "sf", "tracking_no": "SF1400223399", "submission_id": "s-good"}
        r = await client.post(page, data=good)
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        assert "SF1400223399" not in (await client.get(page)).text.split("<form")[0]
