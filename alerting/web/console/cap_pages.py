"""Console: take a CAP message by upload. Upload → the preview of what it would issue, update or lift → the same
red confirmation as issuing by hand → taken (once per sender and identifier, as over the API).

The preview carries the message back in the form (base64), and taking it parses and checks it all over again:
what is taken is exactly what the confirmation posted, and a page left open cannot take it twice.
"""

from __future__ import annotations

import base64
import binascii

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from alerting.cap.errors import CapRefused
from alerting.cap.importer import CapImporter, Preview
from alerting.cap.safe import MAX_BYTES
from alerting.model.domain import Level
from alerting.views.preview import preview
from alerting.web.console.issue_pages import RED_CONFIRMATION
from alerting.web.console.web import PREFIX, Issuing, Seeing, Viewer, issuer, redirect, render
from alerting.web.core import Core

log = structlog.get_logger()

router = APIRouter(include_in_schema=False)
BASE = PREFIX + "/cap"
ACTION_LABEL = {"issue": "发布预警", "update": "更新预警", "cancel": "解除预警", "none": "不做任何改动"}


def _importer(core: Core) -> CapImporter:
    return CapImporter(core.db, core.clock, core.alerts, core.cap_mapping)


def _form(request: Request, who: Viewer, error: str | None = None, status: int = 200) -> Response:
    return render(request, who, "cap_upload", status=status, error=error, max_kb=MAX_BYTES // 1024)


def _refusal(exc: CapRefused) -> str:
    return f"这条 CAP 消息不能接收：{exc.element or '文档'}：{exc.message}"


def _red(p: Preview) -> bool:
    return p.action in ("issue", "update") and p.mapped.level is Level.RED


async def _preview_page(
    request: Request, core: Core, who: Viewer, p: Preview, data: bytes, error: str | None = None
) -> Response:
    reach = None
    if p.request is not None:
        reach = await preview(core.db, core.clock, core.alerts.planner, p.request)
    return render(
        request,
        who,
        "cap_preview",
        status=422 if error else 200,
        p=p,
        reach=reach,
        action=ACTION_LABEL[p.action],
        red=_red(p),
        confirmation=RED_CONFIRMATION,
        message=base64.b64encode(data).decode("ascii"),
        error=error,
    )


@router.get(BASE)
async def upload_form(request: Request, who: Seeing) -> Response:
    issuer(who)
    return _form(request, who)


@router.post(BASE + "/check")
async def check_upload(request: Request, who: Issuing) -> Response:
    core: Core = request.app.state.core
    upload = (await request.form()).get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return _form(request, who, "请选择要上传的 CAP 文件（.xml）。", status=422)
    data = await upload.read(MAX_BYTES + 1)
    try:
        p = await _importer(core).check(data, who.principal)
    except CapRefused as exc:
        return _form(request, who, _refusal(exc), status=exc.status)
    return await _preview_page(request, core, who, p, data)


@router.post(BASE)
async def take_upload(request: Request, who: Issuing) -> Response:
    core: Core = request.app.state.core
    form = await request.form()
    try:
        data = base64.b64decode(str(form.get("message") or ""), validate=True)
    except (binascii.Error, ValueError):
        data = b""
    if not data:
        return _form(request, who, "没有收到要接收的消息，请重新上传。", status=422)
    importer = _importer(core)
    try:
        p = await importer.check(data, who.principal)
        if _red(p) and form.get("confirm_red") != "1":
            return await _preview_page(request, core, who, p, data, f"接收红色预警前，请勾选“{RED_CONFIRMATION}”。")
        taken = await importer.take(data, who.principal)
    except CapRefused as exc:
        return _form(request, who, _refusal(exc), status=exc.status)
    log.info("console.cap_taken", alert_id=taken.alert_id, outcome=taken.outcome, actor=who.principal.actor)
    said = {"issued": "已发布", "updated": "已更新", "lifted": "已解除", "unchanged": "已接收（内容没有变化）"}
    if taken.duplicate:
        notice = f"这条 CAP 消息已经接收过（预警 #{taken.alert_id}），这次没有再做任何事"
    else:
        notice = f"CAP 消息{said.get(taken.outcome, taken.outcome)}：预警 #{taken.alert_id}"
    return redirect(f"{PREFIX}/alerts/{taken.alert_id}" if taken.alert_id else BASE, notice)
