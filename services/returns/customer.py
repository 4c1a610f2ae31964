"""The customer's return page (HTML, no JavaScript): GET /r/{token} shows one return in the customer's
language and time zone; POST /r/{token} takes the courier and tracking number the customer entered.

A token names one return (returnflow/links.py); an unknown one answers 404 and an expired or revoked
one 410, each with a plain "this link is no longer valid" page, so a link never shows anything but
its own return. The page gets only the fields of services.returns.repository.CustomerReturn: no phone
number, address or internal id. Each route parses, calls a handler and renders its outcome."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.dates import format_skeleton, format_time, get_timezone_location
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup

from returnflow.http import context_dependency, correlation_id
from returnflow.i18n import babel_locale, format_money, pick_locale
from services.returns import handlers
from services.returns.handlers import CustomerPage, LinkGone, LinkInvalid, ReturnsContext, TrackingSubmission
from services.returns.page_text import LOCALES, TEXT, courier_name
from services.returns.rules import COURIERS

Ctx = Annotated[ReturnsContext, Depends(context_dependency(ReturnsContext))]

# The customer's pages are HTML for people (a bad link answers a localized HTML page, not problem details):
# they are no part of the API contract, so the OpenAPI leaves them out; the browser tests cover them.
router = APIRouter(tags=["customer"], include_in_schema=False)

TEMPLATES = Path(__file__).parent / "templates"
_env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, trim_blocks=True, lstrip_blocks=True)
CSS = Markup((TEMPLATES / "page.css").read_text(encoding="utf-8"))  # ours, inlined as is (its hash is in the CSP)
# The page's only style is inline; the policy names it by hash, and nothing else may load or run.
_CSS_HASH = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
HEADERS = {
    "content-security-policy": (
        f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'"
    ),
    "referrer-policy": "no-referrer",  # the token is in the URL: never pass it on
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "x-robots-tag": "noindex",
}
MAX_FORM_BYTES = 4096
NOTICES = ("registered",)  # what ?notice= may say (the redirect after a registration)


def html_of(template: str, locale: str, **values: Any) -> str:
    text = TEXT[locale]

    def t(key: str, **kw: Any) -> str:
        return text[key].format(**kw) if kw else text[key]

    return _env.get_template(template).render(lang=locale, css=CSS, t=t, **values)


def render(template: str, locale: str, status: int, **values: Any) -> HTMLResponse:
    return HTMLResponse(html_of(template, locale, **values), status, headers=HEADERS)


def negotiate(accept_language: str | None) -> str:
    """The first language of Accept-Language the page speaks, else English."""
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip()
        if tag and tag != "*" and pick_locale(tag, LOCALES, "") in LOCALES:
            return pick_locale(tag, LOCALES)
    return "en"


def link_invalid(request: Request, outcome: LinkInvalid | LinkGone) -> HTMLResponse:
    if isinstance(outcome, LinkGone):
        return render("invalid.html", pick_locale(outcome.locale, LOCALES), 410)
    return render("invalid.html", negotiate(request.headers.get("accept-language")), 404)


# -- what the page shows ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepView:
    label: str
    state: str  # done, current, todo, stop
    at: str | None
    iso: str | None
    key: str = ""


def zone_of(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "Asia/Shanghai")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("Asia/Shanghai")


def local_time(at: datetime, tz: ZoneInfo, locale: str) -> str:
    loc = babel_locale(locale)
    day = format_skeleton("MMMd", at, tzinfo=tz, locale=loc)
    return f"{day} {format_time(at, 'short', tzinfo=tz, locale=loc)}"


def step_views(page: CustomerPage, locale: str, tz: ZoneInfo) -> list[StepView]:
    """The progress line: steps done with their time, the first not done is current, unless the return
    stopped (cancelled, refund declined): then that is its last step."""
    text, p = TEXT[locale], page.progress
    stop = [(k, at) for k, at in (("cancelled", p.cancelled_at), ("rejected", p.rejected_at)) if at is not None]
    current = None if stop else next((s.key for s in p.steps if not s.done), None)
    views = [
        StepView(
            text[f"step.{s.key}"],
            "done" if s.done else ("current" if s.key == current else "todo"),
            local_time(s.at, tz, locale) if s.at else None,
            s.at.isoformat() if s.at else None,
            s.key,
        )
        for s in p.steps
        if s.done or not stop
    ]
    views += [StepView(text[f"step.{k}"], "stop", local_time(at, tz, locale), at.isoformat()) for k, at in stop]
    return views


def refund_view(page: CustomerPage, locale: str) -> dict[str, str] | None:
    text, ret, refund = TEXT[locale], page.ret, page.progress.refund
    if refund is not None:
        how = text[
            "refund.paid" if refund.paid else ("refund.review" if page.progress.under_review else "refund.pending")
        ]
        return {"amount": format_money(refund.amount, refund.currency, locale), "how": how}
    if ret.kind == "exchange" or page.next_action in ("cancelled", "rejected"):
        return None
    worth = min(ret.paid_total, sum(int(line["qty"]) * int(line["unit_price"]) for line in ret.lines))
    amount = format_money(worth, ret.currency, locale)
    return {"amount": amount, "how": text["refund.expected"].format(amount=amount)}


def replacement_view(page: CustomerPage, locale: str) -> dict[str, str] | None:
    """An exchange's outgoing parcel, as the "new item on its way" step shows it."""
    parcel = page.progress.replacement
    if parcel is None:
        return None
    return {"carrier": courier_name(locale, parcel.carrier), "tracking_no": parcel.tracking_no}


def notice_text(page: CustomerPage, locale: str) -> str | None:
    if page.notice is None:
        return None
    minutes = max(1, round((page.retry_after_s or 0) / 60))
    return TEXT[locale][f"notice.{page.notice}"].format(minutes=minutes)


# Rendered pages by what they show: a page is the same HTML until its return changes (a new timeline
# entry, a tracking number, a status), so most reloads skip the step formatting and the template (about
# half the page's CPU, bench/page.py). Keyed by the return's whole content, a new fact is a new key.
RENDER_CACHE_SIZE = 2048
_rendered: OrderedDict[str, str] = OrderedDict()
_SUBMISSION = "\x00submission\x00"  # each form gets its own one-time submission id


def show(ctx: ReturnsContext, token: str, page: CustomerPage, status: int = 200) -> HTMLResponse:
    plain = page.notice is None and not page.errors and not page.form
    key = f"{page.ret!r}|{ctx.shop_name(page.ret.shop_id)}|{ctx.settings.page_refresh_s}|{token}"
    html = _rendered.get(key) if plain else None
    if html is None:
        html = render_page(ctx, token, page)
        if plain:
            _rendered[key] = html
            if len(_rendered) > RENDER_CACHE_SIZE:
                _rendered.popitem(last=False)
    else:
        _rendered.move_to_end(key)
    return HTMLResponse(html.replace(_SUBMISSION, uuid.uuid4().hex), status, headers=HEADERS)


def render_page(ctx: ReturnsContext, token: str, page: CustomerPage) -> str:
    ret = page.ret
    locale = pick_locale(ret.locale, LOCALES)
    tz = zone_of(ret.timezone)
    refresh = ctx.settings.page_refresh_s if not page.can_register and page.progress.closed_at is None else 0
    return html_of(
        "page.html",
        locale,
        refresh_s=refresh,
        shop=ctx.shop_name(ret.shop_id),
        ret=ret,
        lines=ret.lines,
        steps=step_views(page, locale, tz),
        zone=get_timezone_location(tz, locale=babel_locale(locale)),
        refund=refund_view(page, locale),
        action=page.next_action,
        tracking_no=ret.tracking_no,
        replacement=replacement_view(page, locale),
        can_register=page.can_register,
        couriers=[(slug, courier_name(locale, slug)) for slug in COURIERS],
        form=page.form,
        errors=page.errors,
        notice=page.notice,
        notice_text=notice_text(page, locale),
        submission_id=_SUBMISSION,
        form_action=token,  # relative to /r/: the page's own URL, behind any path prefix
    )


# -- routes ----------------------------------------------------------------------------------------------


@router.get("/r/{token}", response_class=HTMLResponse, summary="A customer's return page (the link in every SMS)")
async def return_page(token: str, request: Request, ctx: Ctx, notice: str | None = None) -> Response:
    outcome = await handlers.customer_page(ctx, token)
    if not isinstance(outcome, CustomerPage):
        return link_invalid(request, outcome)
    if notice in NOTICES:
        outcome = handlers.replace(outcome, notice=notice)
    return show(ctx, token, outcome)


@router.post(
    "/r/{token}",
    response_class=HTMLResponse,
    summary="The customer's courier and tracking number (form: carrier, tracking_no, submission_id)",
)
async def submit_tracking(token: str, request: Request, ctx: Ctx) -> Response:
    raw = await request.body()
    if len(raw) > MAX_FORM_BYTES:
        return Response("form too large", 413)
    form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace"), max_num_fields=10).items()}
    sub = TrackingSubmission(
        token,
        form.get("carrier", "")[:32],
        form.get("tracking_no", "")[:80],
        form.get("submission_id", "")[:64] or uuid.uuid4().hex,
        correlation_id(request),
    )
    outcome = await handlers.register_customer_tracking(ctx, sub)
    if not isinstance(outcome, CustomerPage):
        return link_invalid(request, outcome)
    if outcome.notice == "registered":  # post/redirect/get: a reload does not post again
        return RedirectResponse(f"{token}?notice=registered", 303, headers=HEADERS)
    if outcome.notice == "too_many":
        response = show(ctx, token, outcome, 429)
        response.headers["retry-after"] = str(max(1, int(outcome.retry_after_s or 1)))
        return response
    return show(ctx, token, outcome, 422 if outcome.errors else 409 if outcome.notice else 200)
