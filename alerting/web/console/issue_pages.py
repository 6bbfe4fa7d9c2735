"""Issuing a warning from the console: the form, its preview, and issuing.

Every step works without JavaScript: searching units, reloading a template and going back to edit are
buttons of the one form, so whatever the officer typed travels with each of them.

The preview's publish form carries a one-time token, taken as an Idempotency-Key (issue.once): a second
submit of the same form (a double click, a reload, the back button) shows the alert the first one issued.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col
from starlette.datastructures import FormData, QueryParams

from alerting.deliver.messages import AlertText
from alerting.deliver.messages import render as render_message
from alerting.issue.alerts import AlertRequest
from alerting.issue.once import KeyReused, RequestKey, issue_once
from alerting.issue.planning import UnknownUnits
from alerting.issue.warning_texts import hazards, warning_text
from alerting.model.access import Principal, check_units
from alerting.model.domain import Level, Purpose, TargetKind
from alerting.model.plain_text import bad_character
from alerting.store.tables import Target
from alerting.views.preview import Preview, preview
from alerting.views.units import UnitHit, lookup, search, tree
from alerting.web.console.web import HEADERS, PREFIX, Issuing, PageError, Seeing, Viewer, issuer, redirect, render
from alerting.web.core import Core

log = structlog.get_logger()

router = APIRouter(include_in_schema=False)

RED_CONFIRMATION = "我已核实，确认发布红色预警"
DEFAULT_LEVEL = Level.YELLOW.value
LEVELS = [lv for lv in Level]  # most severe first, as officers read them
LIMITS = {"title": 200, "text": 2000, "instructions": 1000}
TOKEN_MAX = 64
FIELD_LABEL = {"level": "预警级别", "hazard": "灾种", "title": "标题", "text": "预警内容", "instructions": "防御指引"}


@dataclass
class IssueForm:
    """The form as typed; it travels in every button's submit, including the preview's hidden fields."""

    level: str = DEFAULT_LEVEL
    hazard: str = ""
    title: str = ""
    text: str = ""
    instructions: str = ""
    units: list[str] = field(default_factory=list)
    exercise: bool = False
    q: str = ""
    confirmed: bool = False
    token: str = ""  # the preview's one-time token; the form page has none, so each preview mints a new one

    @classmethod
    def read(cls, data: FormData | QueryParams) -> IssueForm:
        def text(name: str) -> str:
            value = data.get(name)
            return value.strip() if isinstance(value, str) else ""

        units = [u.strip() for u in data.getlist("units") if isinstance(u, str) and u.strip()]
        return cls(
            level=text("level") or DEFAULT_LEVEL,
            hazard=text("hazard") or hazards()[0],
            title=text("title"),
            text=text("text"),
            instructions=text("instructions"),
            units=list(dict.fromkeys(units)),
            exercise=text("exercise") in ("1", "on", "true"),
            q=text("q")[:50],
            confirmed=text("confirm_red") == "1",
            token=text("issue_token")[:TOKEN_MAX],
        )

    @property
    def is_red(self) -> bool:
        return self.level == Level.RED.value

    def with_template(self, area_names: list[str]) -> IssueForm:
        try:
            level = Level(self.level)
        except ValueError:
            return self
        offered = warning_text(self.hazard, level, area_names)
        if offered is None:
            return self
        return replace(self, title=offered.title, text=offered.text, instructions=offered.instructions)


def validate(form: IssueForm) -> tuple[AlertRequest | None, dict[str, str]]:
    """The request to issue, or what is wrong, per field, in words the officer reads."""
    errors: dict[str, str] = {}
    if form.level not in {lv.value for lv in Level}:
        errors["level"] = "请选择预警级别（红色、橙色、黄色或蓝色）"
    if form.hazard not in hazards():
        errors["hazard"] = "请从列表中选择灾种"
    for name in ("title", "text"):
        if not getattr(form, name):
            errors[name] = f"请填写{FIELD_LABEL[name]}"
    for name, limit in LIMITS.items():
        if len(getattr(form, name)) > limit:
            errors[name] = f"{FIELD_LABEL[name]}不能超过 {limit} 字（现在 {len(getattr(form, name))} 字）"
        # pasted from elsewhere, text can carry characters nobody sees that every phone would still receive
        elif found := bad_character(getattr(form, name), multiline=name != "title"):
            what = "换行" if found.line_break else f"不可见的控制字符（{found.code}）"
            errors[name] = f"{FIELD_LABEL[name]}的第 {found.position} 个字符是{what}，请删除后再试"
    if not form.units:
        errors["units"] = "请至少选择一个目标单位"
    if errors:
        return None, errors
    try:
        req = AlertRequest(
            level=Level(form.level),
            hazard=form.hazard,
            title=form.title,
            text=form.text,
            instructions=form.instructions,
            units=form.units,
            exercise=form.exercise,
        )
    except ValidationError as exc:  # the checks above mirror the model; this names anything they missed
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else "form"
            errors[name] = f"{FIELD_LABEL.get(name, name)}：{err['msg']}"
        return None, errors
    return req, {}


async def _check_units(core: Core, who: Principal, form: IssueForm) -> dict[str, str]:
    """Unknown codes are a form error; codes outside a township officer's subtree are refused outright."""
    async with core.db.session() as s:
        known = await lookup(s, form.units)
        outside = await check_units(s, who, form.units)
    missing = [c for c in form.units if c not in known]
    if missing:
        return {"units": "找不到这些单位代码：" + "、".join(missing)}
    if outside:
        log.warning("console.issue_outside_scope", actor=who.actor, units=outside)
        raise PageError(403, f"你只能向本辖区（{who.unit_code}）内的单位发布预警；不在辖区内：{'、'.join(outside)}。")
    return {}


async def _form_page(
    request: Request, core: Core, who: Viewer, form: IssueForm, *, errors: dict[str, str] | None = None
) -> Response:
    async with core.db.session() as s:
        chosen = await _visible(s, who.principal, form.units)
        found: list[UnitHit] = []
        found_total = 0
        if form.q:
            found, found_total = await search(s, who.principal, q=form.q)
        roots = await tree(s, who.principal)
    return render(
        request,
        who,
        "issue",
        status=422 if errors else 200,
        form=form,
        errors=errors or {},
        levels=LEVELS,
        hazards=hazards(),
        chosen=[chosen[c] for c in form.units if c in chosen],
        unknown=[c for c in form.units if c not in chosen],
        found=found,
        found_total=found_total,
        roots=roots,
    )


async def _preview_page(
    request: Request, who: Viewer, form: IssueForm, result: Preview, *, error: str | None = None
) -> Response:
    message = render_message(
        AlertText(Level(form.level), form.hazard, form.title, form.text, form.instructions, form.exercise),
        Purpose.WARN,
        ack_url="（回复链接）",
    )
    return render(
        request,
        who,
        "issue_preview",
        status=422 if error else 200,
        form=form,
        issue_token=form.token or secrets.token_urlsafe(18),
        p=result,
        message=message,
        confirmation=RED_CONFIRMATION,
        error=error,
        minutes=_minutes,
    )


async def _visible(s: AsyncSession, who: Principal, codes: list[str]) -> dict[str, UnitHit]:
    """The chosen units the viewer may see; a code outside a township officer's subtree is as if unknown,
    so the form never names a unit they could not have found by searching."""
    return {c: u for c, u in (await lookup(s, codes)).items() if who.sees_path(u.path)}


async def _names(core: Core, who: Principal, codes: list[str]) -> list[str]:
    """Names of the chosen units in the order chosen, for the {area} of a template."""
    async with core.db.session() as s:
        found = await _visible(s, who, codes)
    return [found[c].name for c in codes if c in found]


def _minutes(seconds: int) -> str:
    if seconds % 60:
        return f"{seconds} 秒"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds // 3600} 小时"
    return f"{seconds // 60} 分钟"


@router.get(PREFIX + "/alerts/new")
async def new_alert(request: Request, who: Seeing) -> Response:
    issuer(who)
    core: Core = request.app.state.core
    form = IssueForm.read(request.query_params)
    if not (form.title or form.text):
        form = form.with_template(await _names(core, who.principal, form.units))
    return await _form_page(request, core, who, form)


@router.post(PREFIX + "/alerts/preview")
async def preview_alert(request: Request, who: Issuing) -> Response:
    core: Core = request.app.state.core
    data = await request.form()
    form = IssueForm.read(data)
    action = data.get("do")
    if action == "template":
        return await _form_page(request, core, who, form.with_template(await _names(core, who.principal, form.units)))
    if action in ("find", "edit"):
        return await _form_page(request, core, who, form)
    req, errors = validate(form)
    errors = errors or await _check_units(core, who.principal, form)
    if req is None or errors:
        return await _form_page(request, core, who, form, errors=errors)
    try:
        result = await preview(core.db, core.clock, core.alerts.planner, req)
    except UnknownUnits as exc:  # a unit removed between the check and the preview
        return await _form_page(
            request, core, who, form, errors={"units": "找不到这些单位代码：" + "、".join(exc.codes)}
        )
    return await _preview_page(request, who, form, result)


@router.post(PREFIX + "/alerts")
async def issue_alert(request: Request, who: Issuing) -> Response:
    core: Core = request.app.state.core
    form = IssueForm.read(await request.form())
    req, errors = validate(form)
    errors = errors or await _check_units(core, who.principal, form)
    if req is None or errors:
        return await _form_page(request, core, who, form, errors=errors)
    if form.is_red and not form.confirmed:
        result = await preview(core.db, core.clock, core.alerts.planner, req)
        error = f"发布红色预警前，请勾选“{RED_CONFIRMATION}”。"
        return await _preview_page(request, who, form, result, error=error)
    actor = who.principal.actor
    try:
        if form.token:
            outcome = await issue_once(
                core.alerts, req, actor=actor, key=RequestKey.of(actor, "form:" + form.token, req)
            )
            if outcome.repeated:
                log.info("console.repeat_submit", alert_id=outcome.issued.alert_id, actor=actor)
                return redirect(
                    f"{PREFIX}/alerts/{outcome.issued.alert_id}",
                    f"预警 #{outcome.issued.alert_id} 已经发布过，这次重复提交没有再次发布",
                )
            issued = outcome.issued
        else:  # a form from before the token (or a script): issued as it says
            issued = await core.alerts.trigger(req, actor=actor)
    except KeyReused as exc:
        result = await preview(core.db, core.clock, core.alerts.planner, req)
        error = f"这张表单已用于发布预警 #{exc.alert_id}，内容已被改动；请核对下面的内容，确认后再发布。"
        return await _preview_page(request, who, replace(form, token=""), result, error=error)
    except UnknownUnits as exc:
        return await _form_page(
            request, core, who, form, errors={"units": "找不到这些单位代码：" + "、".join(exc.codes)}
        )
    async with core.db.session() as s:
        people = await s.scalar(
            select(func.count())
            .select_from(Target)
            .where(col(Target.alert_id) == issued.alert_id, col(Target.kind) == TargetKind.PERSON.value)
        )
    log.info("console.alert_issued", alert_id=issued.alert_id, actor=who.principal.actor, level=req.level.value)
    drill = "演练" if req.exercise else ""
    return redirect(
        f"{PREFIX}/alerts/{issued.alert_id}", f"已发布{drill}预警 #{issued.alert_id}，正在送达 {int(people or 0)} 人"
    )


# What the page's script asks for while the officer types; the same answers the buttons give without it.


@router.get(PREFIX + "/alerts/units")
async def find_units(request: Request, who: Seeing, q: str = "") -> Response:
    issuer(who)
    core: Core = request.app.state.core
    hits: list[UnitHit] = []
    total = 0
    if q.strip():
        async with core.db.session() as s:
            hits, total = await search(s, who.principal, q=q[:50])
    items: list[dict[str, Any]] = [
        {"code": u.code, "name": u.name, "kind_label": u.kind_label, "trail": u.trail} for u in hits
    ]
    return JSONResponse({"items": items, "total": total}, headers=HEADERS)


@router.get(PREFIX + "/alerts/text")
async def offered_text(request: Request, who: Seeing) -> Response:
    issuer(who)
    core: Core = request.app.state.core
    form = IssueForm.read(request.query_params)
    filled = form.with_template(await _names(core, who.principal, form.units))
    return JSONResponse(
        {"title": filled.title, "text": filled.text, "instructions": filled.instructions}, headers=HEADERS
    )
