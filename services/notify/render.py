"""SMS texts: Jinja2 templates a merchant can edit, one folder per locale, one file per step.

Built-in templates live in `services/notify/templates/<locale>/<step>.txt`; a folder given by
`RETURNFLOW_NOTIFY_TEMPLATES_DIR` with the same layout overrides them file by file. Templates run in
Jinja2's sandbox with strict undefined variables, and are all rendered once at start-up with sample
values so a broken edit is found before a customer's message is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import BaseLoader, ChoiceLoader, FileSystemLoader, StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from services.notify.rules import (
    CARE_STEPS,
    format_money,
    gsm_spaces,
    is_reminder,
    pick_locale,
    reminder_no,
    sms_segments,
)

BUILTIN_DIR = Path(__file__).parent / "templates"
TEMPLATE_NAMES: tuple[str, ...] = (*CARE_STEPS, "reminder", "stop_hint")


class TemplateProblem(Exception):
    """A template is missing or does not render."""


def template_name(step: str) -> str:
    return "reminder" if is_reminder(step) else step


class Templates:
    def __init__(self, override_dir: Path | None = None, default_locale: str = "en") -> None:
        dirs = [d for d in (override_dir, BUILTIN_DIR) if d is not None]
        loaders: list[BaseLoader] = [FileSystemLoader(str(d), encoding="utf-8") for d in dirs]
        self.env = SandboxedEnvironment(
            loader=ChoiceLoader(loaders),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,
            auto_reload=True,  # an edited file is picked up without a restart
        )
        self.locales: tuple[str, ...] = tuple(
            sorted({p.name for d in dirs if d.is_dir() for p in d.iterdir() if p.is_dir()})
        )
        if not self.locales:
            raise TemplateProblem(f"no template locales found in {', '.join(map(str, dirs))}")
        self.default_locale = pick_locale(default_locale, self.locales, self.locales[0])

    def locale_for(self, requested: str | None) -> str:
        return pick_locale(requested, self.locales, self.default_locale)

    def _render(self, locale: str, name: str, ctx: dict[str, Any]) -> str:
        try:
            text = self.env.get_template(f"{locale}/{name}.txt").render(**ctx)
        except TemplateError as exc:
            raise TemplateProblem(f"{locale}/{name}.txt: {type(exc).__name__}: {exc}") from exc
        return gsm_spaces("\n".join(line.strip() for line in text.splitlines() if line.strip()))

    def render(self, step: str, locale: str, values: dict[str, Any]) -> str:
        ctx = context(values, locale)
        ctx["stop_hint"] = self._render(locale, "stop_hint", ctx)
        return self._render(locale, template_name(step), ctx)

    def check(self) -> None:
        """Render every template of every locale with sample values (raises TemplateProblem)."""
        problems = []
        for locale in self.locales:
            for step in (*CARE_STEPS, "reminder_1"):
                for kind in ("refund_only", "return_and_refund", "exchange"):
                    try:
                        self.render(step, locale, sample_values(kind))
                    except TemplateProblem as exc:
                        problems.append(str(exc))
        if problems:
            raise TemplateProblem("; ".join(sorted(set(problems))))


VARIABLES: tuple[str, ...] = (
    "shop_name",
    "order_id",
    "return_ref",
    "kind",
    "items",
    "tracking_no",
    "carrier",
    "location",
    "items_received",
    "amount",
    "reminder_no",
    "days",
    "link",
)


def context(values: dict[str, Any], locale: str) -> dict[str, Any]:
    """Template variables from stored values: every name is defined (None when unknown), money is
    formatted for the locale from integer minor units."""
    ctx: dict[str, Any] = {k: values.get(k) for k in VARIABLES}
    if values.get("amount_minor") is not None and values.get("currency"):
        ctx["amount"] = format_money(int(values["amount_minor"]), str(values["currency"]), locale)
    step = str(values.get("step") or "")
    if is_reminder(step) and ctx["reminder_no"] is None:
        ctx["reminder_no"] = reminder_no(step)
    ctx["shop_name"] = ctx["shop_name"] or values.get("shop_id") or ""
    return ctx


def sample_values(kind: str = "return_and_refund") -> dict[str, Any]:
    return {
        "shop_name": "Demo Shop",
        "order_id": "order-1",
        "return_ref": "pr-1",
        "kind": kind,
        "items": 2,
        "tracking_no": "SF1234567890",
        "carrier": "SF Express",
        "location": "Hangzhou",
        "items_received": 2,
        "amount_minor": 4000,
        "currency": "CNY",
        "reminder_no": 1,
        "days": 1,
        "link": "https://returns.example.com/r/AbCdEfGhIjKlMnOpQrStUv",
    }


# The longest link the length check allows for: a 26-character public base URL and a 22-character token.
SAMPLE_LINK = "https://returns.example/r/AbCdEfGhIjKlMnOpQrStUv"
MAX_SEGMENTS = 2
SMS_LENGTHS_START = "<!-- sms-lengths:start (generated by `make docs` from the templates; do not edit) -->"
SMS_LENGTHS_END = "<!-- sms-lengths:end -->"


def length_rows(templates: Templates) -> list[tuple[str, str, str, int, str, int]]:
    """Every template of every locale, rendered with the sample values, a 12-character order id and a
    48-character link: (locale, template, kind, characters, encoding, segments)."""
    rows: list[tuple[str, str, str, int, str, int]] = []
    for locale in templates.locales:
        for step in (*CARE_STEPS, "reminder_1"):
            for kind in ("refund_only", "return_and_refund", "exchange"):
                values = {**sample_values(kind), "order_id": "100234567890", "link": SAMPLE_LINK}
                text = templates.render(step, locale, values)
                rows.append((locale, template_name(step), kind, len(text), *sms_segments(text)))
    return rows


def length_table(templates: Templates) -> str:
    lines = ["| locale | template | kind | characters | encoding | segments |", "|---|---|---|---|---|---|"]
    lines += [
        f"| {loc} | {name} | {kind} | {n} | {enc} | {seg} |" for loc, name, kind, n, enc, seg in length_rows(templates)
    ]
    return "\n".join(lines) + "\n"


def provider_params(values: dict[str, Any], locale: str) -> dict[str, str]:
    """The same variables as strings, for providers that keep templates on their side (Aliyun's
    TemplateParam); empty values are left out."""
    ctx = context(values, locale)
    return {k: str(v) for k, v in ctx.items() if v not in (None, "")}
