"""The workbench's pages (HTML for people, no JavaScript needed): sign-in and sign-out, the queue, a
return and its decisions, the returns team's blind check, warehouse receiving. Each route checks the
session and the person's role, checks the CSRF token of every POST, calls a handler or a view with the
person's own token for actions, and renders the outcome."""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import re
import secrets
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup

from returnflow.http import context_dependency, correlation_id
from returnflow.i18n import format_money, pick_locale
from services.workbench import handlers, rules, views
from services.workbench.handlers import Session, WorkbenchContext
from services.workbench.page_text import LOCALES, ROLE_NAMES, TEXT
from services.workbench.upstream import Answer

Ctx = Annotated[WorkbenchContext, Depends(context_dependency(WorkbenchContext))]

# Pages for people: no part of the API contract (the browser tests cover them).
router = APIRouter(tags=["workbench"], include_in_schema=False)

TEMPLATES = Path(__file__).parent / "templates"
_env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, trim_blocks=True, lstrip_blocks=True)
CSS = Markup((TEMPLATES / "page.css").read_text(encoding="utf-8"))
_CSS_HASH = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
HEADERS = {
    "content-security-policy": (
        f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'"
    ),
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
}
SESSION_COOKIE = "wb_session"
SIGNIN_CSRF_COOKIE = "wb_signin_csrf"  # before a session exists: double-submit token of the sign-in form
LANG_COOKIE = "wb_lang"
MAX_FORM_BYTES = 16 * 1024


# -- language, rendering -----------------------------------------------------------------------------------
def locale_of(request: Request) -> str:
    asked = request.query_params.get("lang") or request.cookies.get(LANG_COOKIE)
    if asked in LOCALES:
        return str(asked)
    for part in (request.headers.get("accept-language") or "").split(","):
        tag = part.split(";")[0].strip()
        if tag and tag != "*" and pick_locale(tag, LOCALES, "") in LOCALES:
            return pick_locale(tag, LOCALES)
    return "en"


def render(request: Request, template: str, status: int = 200, s: Session | None = None, **values: Any) -> HTMLResponse:
    locale = locale_of(request)
    text = TEXT[locale]

    def t(key: str, **kw: Any) -> str:
        return text.get(key, key).format(**kw) if kw else text.get(key, key)

    def money(minor: Any, currency: Any = "CNY") -> str:
        return format_money(int(minor), str(currency or "CNY"), locale) if isinstance(minor, int) else ""

    other = "zh-CN" if locale == "en" else "en"
    html = _env.get_template(template).render(
        lang=locale,
        other_lang=other,
        css=CSS,
        t=t,
        money=money,
        role_name=lambda r: ROLE_NAMES[locale].get(str(r), str(r)),
        s=s,
        may=lambda action: s is not None and rules.may(s.role, action),
        path=request.url.path,
        **values,
    )
    response = HTMLResponse(html, status, headers=HEADERS)
    if request.query_params.get("lang") in LOCALES:
        response.set_cookie(LANG_COOKIE, locale, max_age=365 * 86400, samesite="lax", httponly=True)
    return response


def behind_tls(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "").lower() == "https"


# -- who is asking ---------------------------------------------------------------------------------------------
async def session_of(request: Request, ctx: WorkbenchContext) -> Session | None:
    return await handlers.session_of(ctx, request.cookies.get(SESSION_COOKIE))


def forbidden(request: Request, s: Session | None, key: str = "forbidden") -> HTMLResponse:
    return render(request, "message.html", 403, s, message_key=key)


async def person_for(request: Request, ctx: WorkbenchContext, action: str) -> Session | Response:
    """The signed-in person when their role may do `action`; else sign-in (a GET), or 403."""
    s = await session_of(request, ctx)
    if s is None:
        if request.method == "GET":
            return RedirectResponse("/signin?" + urlencode({"next": str(request.url.path)}), 303)
        return forbidden(request, None)
    if not rules.may(s.role, action):
        return forbidden(request, s)
    return s


async def form_of(request: Request) -> dict[str, str]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            break
    parsed = parse_qs(body[:MAX_FORM_BYTES].decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items()}


def csrf_ok(expected: str | None, form: dict[str, str]) -> bool:
    given = form.get("csrf") or ""
    return bool(expected) and bool(given) and hmac.compare_digest(given.encode(), str(expected).encode())


async def acting_person(
    request: Request, ctx: WorkbenchContext, action: str
) -> tuple[Session, dict[str, str]] | Response:
    """A POST: the person (role checked) and the form, its CSRF token checked (missing or wrong: 403)."""
    who = await person_for(request, ctx, action)
    if isinstance(who, Response):
        return who
    form = await form_of(request)
    if not csrf_ok(who.csrf_token, form):
        return forbidden(request, who, "csrf")
    return who, form


# -- sign-in, sign-out ---------------------------------------------------------------------------------------
@router.get("/")
async def home(request: Request, ctx: Ctx) -> Response:
    s = await session_of(request, ctx)
    return RedirectResponse(rules.home_of(s.role) if s else "/signin", 303)


def safe_next(value: str | None) -> str | None:
    return value if value and value.startswith("/") and not value.startswith("//") else None


@router.get("/signin")
async def signin_page(request: Request) -> Response:
    token = secrets.token_urlsafe(24)
    response = render(request, "signin.html", csrf=token, next=safe_next(request.query_params.get("next")))
    response.set_cookie(
        SIGNIN_CSRF_COOKIE, token, max_age=3600, httponly=True, samesite="lax", secure=behind_tls(request)
    )
    return response


@router.post("/signin")
async def signin(request: Request, ctx: Ctx) -> Response:
    form = await form_of(request)
    if not csrf_ok(request.cookies.get(SIGNIN_CSRF_COOKIE), form):
        return forbidden(request, None, "csrf")
    person_id, token = (form.get("person_id") or "").strip(), (form.get("token") or "").strip()
    who = await handlers.identify(ctx.upstream, person_id, token) if person_id and token else None
    if who is None:
        fresh = secrets.token_urlsafe(24)
        page = render(request, "signin.html", 401, csrf=fresh, failed=True, person_id=person_id)
        page.set_cookie(SIGNIN_CSRF_COOKIE, fresh, max_age=3600, httponly=True, samesite="lax")
        return page
    session_id = await handlers.open_session(ctx, who, token)
    response = RedirectResponse(safe_next(form.get("next")) or rules.home_of(who.role), 303)
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=int(ctx.settings.session_ttl_s),
        httponly=True,
        samesite="lax",
        secure=behind_tls(request),
        path="/",
    )
    response.delete_cookie(SIGNIN_CSRF_COOKIE)
    return response


@router.post("/signout")
async def signout(request: Request, ctx: Ctx) -> Response:
    s = await session_of(request, ctx)
    if s is not None:
        form = await form_of(request)
        if not csrf_ok(s.csrf_token, form):
            return forbidden(request, s, "csrf")
        await handlers.close_session(ctx, s)
    response = RedirectResponse("/signin", 303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# -- the queue -------------------------------------------------------------------------------------------------
def queue_filter(request: Request) -> tuple[rules.QueueFilter, dict[str, str]]:
    q = request.query_params
    kind = q.get("kind") if q.get("kind") in rules.KINDS else None
    role = q.get("role") if q.get("role") in (*rules.DECIDERS, rules.RETURNS_TEAM) else None
    try:
        hours = float(q["min_age_h"]) if q.get("min_age_h") else None
    except ValueError:
        hours = None
    try:
        min_amount = rules.parse_amount(q["min_amount"]) if q.get("min_amount") else None
    except ValueError:
        min_amount = None
    shop = (q.get("shop") or "").strip()[:64] or None
    f = rules.QueueFilter(kind, shop, role, hours * 3600 if hours is not None else None, min_amount)
    given = {"kind": kind, "shop": shop, "role": role, "min_age_h": q.get("min_age_h")}
    given["min_amount"] = q.get("min_amount") if min_amount is not None else None
    shown = {k: v for k, v in given.items() if v}
    return f, shown


def age_text(now: datetime, at: datetime) -> str:
    minutes = int((now - at).total_seconds() // 60)
    if minutes < 60:
        return f"{max(0, minutes)} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h"
    return f"{minutes // 1440} d"


@router.get("/queue")
async def queue(request: Request, ctx: Ctx) -> Response:
    s = await person_for(request, ctx, "queue")
    if isinstance(s, Response):
        return s
    f, shown = queue_filter(request)
    cursor = (request.query_params.get("cursor") or "")[:512] or None
    if cursor is not None and f.kind is None:
        cursor = None  # the all-kinds view is one page; a kind pages on
    try:
        q = await views.queue(ctx, f, cursor, ctx.settings.page_size)
    except ValueError:  # a cursor this queue did not give: its first page
        q = await views.queue(ctx, f, None, ctx.settings.page_size)
    now = datetime.now(UTC)
    next_url = "/queue?" + urlencode({**shown, "cursor": q.next_cursor}) if q.next_cursor else None
    return render(
        request,
        "queue.html",
        s=s,
        page=q,
        total=sum(q.counts.values()),
        kinds=rules.KINDS,
        roles=(*rules.DECIDERS, rules.RETURNS_TEAM),
        shown=shown,
        now=now,
        age=age_text,
        missing=q.missing,
        next_url=next_url,
        refresh=ctx.settings.queue_refresh_s,
    )


# -- a return and its decisions ----------------------------------------------------------------------------------
def _uuid(value: str) -> str | None:
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        return None


@router.get("/returns")
async def find_return(request: Request, ctx: Ctx) -> Response:
    s = await person_for(request, ctx, "return")
    if isinstance(s, Response):
        return s
    q = (request.query_params.get("q") or "").strip()[:64]
    if rid := _uuid(q):
        return RedirectResponse(f"/returns/{rid}", 303)
    found = await views.search(ctx, q) if q else []
    if len(found) == 1:
        return RedirectResponse(f"/returns/{found[0].get('id') or found[0].get('return_id')}", 303)
    return render(request, "search.html", 200 if found or not q else 404, s, q=q, found=found)


def authority_of(s: Session, page: dict[str, Any]) -> rules.Authority:
    ledger = page.get("ledger") or {}
    currency = str(ledger.get("currency") or page["ret"].get("currency") or "CNY")
    return rules.Authority(rules.limit_for(s.limits, currency), rules.granted_by_people(ledger.get("refunds", [])))


async def show_return(
    request: Request, ctx: WorkbenchContext, s: Session, return_id: str, status: int = 200, **extra: Any
) -> Response:
    page = await views.return_page(ctx, return_id)
    if page is None:
        return render(request, "message.html", 404, s, message_key="not_found")
    ledger = page.get("ledger") or {}
    refunded = sum(r["amount"] for r in ledger.get("refunds", []) if r.get("status") == "issued")
    pending = sum(r["amount"] for r in ledger.get("refunds", []) if r.get("status") not in ("issued", "failed"))
    return render(
        request,
        "return.html",
        status,
        s,
        p=page,
        rid=return_id,
        currency=page["ret"].get("currency") or "CNY",
        authority=authority_of(s, page) if rules.may(s.role, "decide") else None,
        refunded=refunded,
        pending=pending,
        idem=uuid.uuid4().hex,
        clawback_resolutions=CLAWBACK_RESOLUTIONS,
        failure_actions=FAILURE_ACTIONS,
        **replacement_values(s, page, extra),
        **extra,
    )


def replacement_values(s: Session, page: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """The "ship the replacement" form: for the warehouse, while the exchange's goods are received and its
    replacement has not shipped; its shipment id stays the same across a refused try (a double submit
    is the same shipment to the warehouse)."""
    parcel = page.get("parcel")
    shipped = (extra.get("outcome") or {}).get("result") == "shipped"
    if not rules.may(s.role, "ship") or shipped or not rules.replacement_due(parcel):
        return {"ship": None}
    lines = rules.replacement_lines([x for x in (parcel or {}).get("lines", []) if isinstance(x, dict)])
    given = extra.get("ship_form") or {}
    shipment_id = (given.get("shipment_id") or "").strip()[:100] or uuid.uuid4().hex
    return {"ship": {"lines": lines, "form": given, "shipment_id": shipment_id}}


@router.get("/returns/{return_id}")
async def return_view(request: Request, ctx: Ctx, return_id: str) -> Response:
    s = await person_for(request, ctx, "return")
    if isinstance(s, Response):
        return s
    rid = _uuid(return_id)
    if rid is None:
        return render(request, "message.html", 404, s, message_key="not_found")
    return await show_return(request, ctx, s, rid)


def outcome_of(a: Answer) -> dict[str, Any]:
    """What the person sees at once: done, escalated to whom, or refused and why."""
    body = a.body if isinstance(a.body, dict) else {}
    result = body.get("result") or ("refused" if not a.ok else "done")
    return {
        "result": result,
        "amount": body.get("amount"),
        "role": body.get("required_role"),
        "why": a.detail,
        "errors": a.field_errors(),
    }


@router.post("/returns/{return_id}/decisions")
async def decision(request: Request, ctx: Ctx, return_id: str) -> Response:
    acting = await acting_on_return(request, ctx, "decide", return_id)
    if isinstance(acting, Response):
        return acting
    s, form, rid = acting
    action = form.get("action") or ""
    body: dict[str, Any] = {"action": action}
    errors: dict[str, str] = {}
    if action == "grant_free_refund":
        try:
            body["amount"] = rules.parse_amount(form.get("amount") or "")
        except ValueError as exc:
            errors["amount"] = str(exc)
    elif action in ("approve", "reject"):
        if form.get("escalation_id"):
            body["escalation_id"] = form["escalation_id"]
    else:
        errors["action"] = "choose approve, reject or grant"
    if note := (form.get("note") or "").strip()[:2000]:
        body["note"] = note
    if errors:
        return await show_return(request, ctx, s, rid, 422, errors=errors, form=form)
    key = (form.get("idem") or "").strip()[:100] or uuid.uuid4().hex
    answer = await handlers.decide(ctx, s, rid, body, key, correlation_id(request))
    outcome = outcome_of(answer)
    status = 200 if answer.ok else (answer.status if answer.status >= 400 else 502)
    return await show_return(request, ctx, s, rid, status, outcome=outcome, errors=outcome["errors"], form=form)


CLAWBACK_RESOLUTIONS = ("waived", "recovered_off_platform", "written_off")
FAILURE_ACTIONS = ("retry", "settled_offline", "close")


@router.post("/returns/{return_id}/clawbacks/{clawback_id}/resolution")
async def resolve_clawback(request: Request, ctx: Ctx, return_id: str, clawback_id: str) -> Response:
    acting = await acting_on_return(request, ctx, "resolve_clawback", return_id)
    if isinstance(acting, Response):
        return acting
    s, form, rid = acting
    resolution = form.get("resolution") or ""
    if resolution not in CLAWBACK_RESOLUTIONS:
        return await show_return(request, ctx, s, rid, 422, errors={"resolution": "choose how it was settled"})
    note = (form.get("note") or "").strip()[:2000] or None
    answer = await handlers.resolve_clawback(ctx, s, clawback_id[:128], resolution, note, correlation_id(request))
    return await show_return(
        request, ctx, s, rid, 200 if answer.ok else max(answer.status, 400), outcome=outcome_of(answer)
    )


@router.post("/returns/{return_id}/failures/resolution")
async def resolve_failure(request: Request, ctx: Ctx, return_id: str) -> Response:
    acting = await acting_on_return(request, ctx, "resolve_clawback", return_id)
    if isinstance(acting, Response):
        return acting
    s, form, rid = acting
    action = form.get("action") or ""
    if action not in FAILURE_ACTIONS:
        return await show_return(
            request, ctx, s, rid, 422, errors={"failure": "choose retry, settled offline or close"}
        )
    note = (form.get("note") or "").strip()[:2000] or None
    refund_id = (form.get("refund_id") or "")[:128]
    answer = await handlers.resolve_failure(ctx, s, rid, refund_id, action, note, correlation_id(request))
    return await show_return(
        request, ctx, s, rid, 200 if answer.ok else max(answer.status, 400), outcome=outcome_of(answer)
    )


@router.post("/discrepancies/{discrepancy_id}/resolution")
async def resolve_discrepancy(request: Request, ctx: Ctx, discrepancy_id: str) -> Response:
    acting = await acting_person(request, ctx, "resolve_discrepancy")
    if isinstance(acting, Response):
        return acting
    s, form = acting
    note = (form.get("note") or "").strip()[:4000]
    back = safe_next(form.get("back")) or "/queue"
    if not note:
        return render(request, "message.html", 422, s, message_key="note", back=back)
    answer = await handlers.resolve_discrepancy(ctx, s, discrepancy_id[:128], note, correlation_id(request))
    return render(
        request,
        "message.html",
        200 if answer.ok else max(answer.status, 400),
        s,
        message_key="resolved" if answer.ok else None,
        message=None if answer.ok else answer.detail,
        back=back,
    )


async def acting_on_return(
    request: Request, ctx: Ctx, action: str, return_id: str
) -> Response | tuple[Session, dict[str, str], str]:
    """What every form about one return starts with: the person acting (signed in, CSRF and role checked)
    and the return id — or the page that says why not (404 for an id that names no return)."""
    acting = await acting_person(request, ctx, action)
    if isinstance(acting, Response):
        return acting
    s, form = acting
    rid = _uuid(return_id)
    if rid is None:
        return render(request, "message.html", 404, s, message_key="not_found")
    return s, form, rid


async def exchange_in_hand(
    request: Request, ctx: Ctx, return_id: str
) -> Response | tuple[Session, dict[str, str], str, list[dict[str, Any]]]:
    """What both replacement forms start with: a warehouse person (CSRF and role checked), the return id, and
    the exchange's expected lines — or the page that says why not (404 no such return, 409 not an exchange)."""
    acting = await acting_on_return(request, ctx, "ship", return_id)
    if isinstance(acting, Response):
        return acting
    s, form, rid = acting
    parcel = (await views.return_page(ctx, rid) or {}).get("parcel")
    if parcel is None or parcel.get("kind") != "exchange":
        return await show_return(request, ctx, s, rid, 409, outcome={"result": "not_due"})
    return s, form, rid, [x for x in parcel.get("lines", []) if isinstance(x, dict)]


@router.post("/returns/{return_id}/replacement")
async def ship_replacement(request: Request, ctx: Ctx, return_id: str) -> Response:
    found = await exchange_in_hand(request, ctx, return_id)
    if isinstance(found, Response):
        return found
    s, form, rid, expected = found
    # shipped already or not received: the warehouse decides (the same shipment again is its 200)
    read = rules.read_replacement_form(form, len(expected))
    if read.errors:
        return await show_return(request, ctx, s, rid, 422, ship_form=form, ship_errors=read.errors)
    shipment_id = (form.get("shipment_id") or "").strip()[:100] or uuid.uuid4().hex
    body = {
        "shipment_id": f"wb-{shipment_id}",
        "return_id": rid,
        "carrier": read.carrier,
        "tracking_no": read.tracking_no,
        "packed_by": s.person_id,
        "lines": read.lines,
    }
    answer = await handlers.post_replacement(ctx, s, body, correlation_id(request))
    if answer.ok:
        shipped = {"result": "shipped", "carrier": read.carrier, "tracking_no": read.tracking_no}
        return await show_return(request, ctx, s, rid, 200, outcome=shipped)
    errors = rules.replacement_errors(answer.bad_fields(), answer.detail or f"HTTP {answer.status}")
    status = answer.status if answer.status >= 400 else 502
    return await show_return(
        request, ctx, s, rid, status, outcome=_refused(answer.detail), ship_form=form, ship_errors=errors
    )


@router.post("/returns/{return_id}/replacement/out-of-stock")
async def replacement_out_of_stock(request: Request, ctx: Ctx, return_id: str) -> Response:
    found = await exchange_in_hand(request, ctx, return_id)
    if isinstance(found, Response):
        return found
    s, form, rid, expected = found
    skus = list(dict.fromkeys(str(x["sku"]) for x in rules.replacement_lines(expected)))
    body: dict[str, Any] = {"return_id": rid, "skus": skus, "reported_by": s.person_id}
    if note := (form.get("note") or "").strip()[:2000]:
        body["note"] = note
    answer = await handlers.post_out_of_stock(ctx, s, body, correlation_id(request))
    outcome = {"result": "out_of_stock"} if answer.ok else _refused(answer.detail)
    status = 200 if answer.ok else (answer.status if answer.status >= 400 else 502)
    return await show_return(request, ctx, s, rid, status, outcome=outcome)


def _refused(why: str) -> dict[str, Any]:
    return {"result": "refused", "why": why, "errors": {}}


# -- the returns team's blind check --------------------------------------------------------------------------------
MOVEMENTS = ("restock", "destroy", "relist", "delist")


@router.get("/check")
async def check_page(request: Request, ctx: Ctx) -> Response:
    s = await person_for(request, ctx, "check")
    if isinstance(s, Response):
        return s
    rid = _uuid(request.query_params.get("return_id") or "")
    return render(
        request, "check.html", s=s, movements=MOVEMENTS, form={"return_id": rid or ""}, check_id=uuid.uuid4().hex
    )


@router.post("/check")
async def check(request: Request, ctx: Ctx) -> Response:
    acting = await acting_person(request, ctx, "check")
    if isinstance(acting, Response):
        return acting
    s, form = acting
    errors: dict[str, str] = {}
    rid = _uuid(form.get("return_id") or "")
    if rid is None:
        errors["return_id"] = "enter the return id"
    sku = (form.get("sku") or "").strip()
    if not sku:
        errors["sku"] = "enter the SKU"
    movement = form.get("movement") or ""
    if movement not in MOVEMENTS:
        errors["movement"] = "choose the movement"
    qty_text = (form.get("quantity") or "").strip()
    if not rules.is_count(qty_text):
        errors["quantity"] = "enter the quantity you counted (0 or more)"
    check_id = (form.get("check_id") or "").strip()[:100] or uuid.uuid4().hex
    if errors:
        return render(request, "check.html", 422, s, movements=MOVEMENTS, form=form, errors=errors, check_id=check_id)
    body = {"check_id": check_id, "return_id": rid, "sku": sku, "movement": movement, "quantity": int(qty_text)}
    answer = await handlers.post_check(ctx, s, body, correlation_id(request))
    if not answer.ok:
        errors = answer.field_errors()
        status = answer.status if answer.status >= 400 else 502
        return render(
            request, "check.html", status, s, movements=MOVEMENTS, form=form, errors=errors, check_id=check_id
        )
    return RedirectResponse(f"/check/{rid}/{check_id}", 303)


@router.get("/check/{return_id}/{check_id}")
async def check_result(request: Request, ctx: Ctx, return_id: str, check_id: str) -> Response:
    s = await person_for(request, ctx, "check")
    if isinstance(s, Response):
        return s
    rid = _uuid(return_id)
    found = await views.check_result(ctx, rid, check_id[:128]) if rid else None
    if found is None:
        return render(request, "message.html", 404, s, message_key="not_found")
    pending = found["side"].get("outcome") in (None, "pending", "waiting")
    return render(request, "check_result.html", s=s, r=found, rid=rid, pending=pending, refresh=2)


# -- warehouse receiving ---------------------------------------------------------------------------------------
@router.get("/receive")
async def receive_page(request: Request, ctx: Ctx) -> Response:
    s = await person_for(request, ctx, "receive")
    if isinstance(s, Response):
        return s
    tracking = (request.query_params.get("tracking") or "").strip().replace(" ", "").upper()[:64]
    parcel = await views.parcel_by_tracking(ctx, tracking) if tracking else None
    saved = request.query_params.get("saved")
    status = 404 if tracking and parcel is None else 200
    return render(
        request,
        "receive.html",
        status,
        s,
        tracking=tracking,
        parcel=parcel,
        saved=saved,
        saved_rid=request.query_params.get("rid"),
        conditions=rules.CONDITIONS,
        dispositions=rules.DISPOSITIONS,
        form={},
        errors={},
        receipt_id=uuid.uuid4().hex,
    )


@router.post("/receive")
async def receive(request: Request, ctx: Ctx) -> Response:
    acting = await acting_person(request, ctx, "receive")
    if isinstance(acting, Response):
        return acting
    s, form = acting
    tracking = (form.get("tracking") or "").strip().replace(" ", "").upper()[:64]
    parcel = await views.parcel_by_tracking(ctx, tracking) if tracking else None
    if parcel is None:
        return render(request, "receive.html", 404, s, tracking=tracking, parcel=None, form=form, errors={})
    expected = [x for x in parcel.get("lines", []) if isinstance(x, dict)]
    read = rules.read_receipt_form(form, expected)
    receipt_id = (form.get("receipt_id") or "").strip()[:100] or uuid.uuid4().hex
    values = {
        "tracking": tracking,
        "parcel": parcel,
        "conditions": rules.CONDITIONS,
        "dispositions": rules.DISPOSITIONS,
        "form": form,
        "receipt_id": receipt_id,
    }
    if read.errors:
        return render(request, "receive.html", 422, s, errors=read.errors, **values)
    body = {
        "receipt_id": f"wb-{receipt_id}",
        "return_id": str(parcel.get("return_id")),
        "inspector_id": s.person_id,
        "lines": read.lines,
    }
    answer = await handlers.post_receipt(ctx, s, body, correlation_id(request))
    if not answer.ok:
        errors = answer.field_errors()
        return render(
            request, "receive.html", answer.status if answer.status >= 400 else 502, s, errors=errors, **values
        )
    rid = (answer.body or {}).get("return_id", "")
    return RedirectResponse("/receive?" + urlencode({"saved": body["receipt_id"], "rid": rid}), 303)


# -- the team's numbers (supervisors and above) -----------------------------------------------------------------
CHART_W, CHART_H = 560, 120


def team_asked(request: Request, ctx: WorkbenchContext) -> tuple[rules.TeamRange, str | None]:
    try:
        today = datetime.now(ZoneInfo(ctx.settings.team_tz)).date()
    except (ZoneInfoNotFoundError, ValueError):
        today = datetime.now(UTC).date()
    q = request.query_params
    return rules.team_range(q.get("from"), q.get("to"), today), (q.get("shop") or "").strip()[:64] or None


def decisions_per_day(body: dict[str, Any], start: date, end: date) -> list[tuple[str, int]]:
    """The team's decisions on each day of the range (days without any: 0), for the chart."""
    per_day: dict[str, int] = {}
    for d in body.get("days") or []:
        per_day[str(d.get("day"))] = per_day.get(str(d.get("day")), 0) + int(d.get("decisions") or 0)
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    return [(day.isoformat(), per_day.get(day.isoformat(), 0)) for day in days]


@router.get("/team")
async def team_page(request: Request, ctx: Ctx) -> Response:
    s = await person_for(request, ctx, "team")
    if isinstance(s, Response):
        return s
    asked, shop = team_asked(request, ctx)
    shown = {"from": asked.start.isoformat(), "to": asked.end.isoformat(), **({"shop": shop} if shop else {})}
    values: dict[str, Any] = {"shown": shown, "errors": asked.errors, "tz": ctx.settings.team_tz}
    if asked.errors:
        return render(request, "team.html", 422, s, **values)
    answer = await views.team(ctx, asked.start, asked.end, shop)
    if not answer.ok or not isinstance(answer.body, dict):
        values["errors"] = answer.field_errors()
        values["missing"] = answer.detail
        return render(request, "team.html", answer.status if answer.status >= 400 else 502, s, **values)
    body = answer.body
    return render(
        request,
        "team.html",
        200,
        s,
        **values,
        body=body,
        bars=rules.bar_chart(decisions_per_day(body, asked.start, asked.end), CHART_W, CHART_H),
        chart_w=CHART_W,
        chart_h=CHART_H,
        duration=rules.duration_text,
        share=rules.share_percent,
        csv_url="/team.csv?" + urlencode(shown),
    )


@router.get("/team.csv")
async def team_csv(request: Request, ctx: Ctx) -> Response:
    s = await person_for(request, ctx, "team")
    if isinstance(s, Response):
        return s
    asked, shop = team_asked(request, ctx)
    if asked.errors:
        wrong = "; ".join(f"{k}: {v}" for k, v in asked.errors.items())
        return Response(
            wrong + "\n", 422, media_type="text/plain; charset=utf-8", headers={"cache-control": "no-store"}
        )
    answer = await views.team(ctx, asked.start, asked.end, shop)
    if not answer.ok or not isinstance(answer.body, dict):
        status = answer.status if answer.status >= 400 else 502
        return Response(answer.detail + "\n", status, media_type="text/plain; charset=utf-8")
    out = io.StringIO()
    csv.writer(out).writerows(rules.team_csv_rows(answer.body.get("days") or []))
    of_shop = "-" + re.sub(r"[^A-Za-z0-9_-]", "_", shop) if shop else ""  # a header value: ASCII, no quotes
    name = f"team-{asked.start.isoformat()}-{asked.end.isoformat()}{of_shop}.csv"
    return Response(
        "\ufeff" + out.getvalue(),  # the BOM: Excel opens UTF-8 (a Chinese name) as UTF-8
        200,
        media_type="text/csv; charset=utf-8",
        headers={
            "content-disposition": f'attachment; filename="{name}"',
            "cache-control": "no-store",
            "x-content-type-options": "nosniff",
        },
    )
