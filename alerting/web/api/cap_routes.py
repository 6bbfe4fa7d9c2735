"""CAP 1.2 over HTTP: take a message (POST /api/v1/cap), give an alert as CAP (GET /api/v1/alerts/{id}/cap), and
the public feed of active real warnings (GET /cap/feed.atom, each entry's message at /cap/alerts/{id})."""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, Field

from alerting.cap.errors import CapRefused
from alerting.cap.export import export_alert
from alerting.cap.feed import atom_feed, public_alerts
from alerting.cap.importer import CapImporter, Preview
from alerting.model.access import Forbidden, visible_alert
from alerting.model.domain import AlertStatus
from alerting.store.tables import Alert
from alerting.web.api.auth import CoreDep, Issuer, Reader
from alerting.web.api.problems import Problem, documented
from alerting.web.api.schemas import AlertOut, alert_links
from alerting.web.core import Core

log = structlog.get_logger()

router = APIRouter(tags=["cap"])

CAP_MEDIA = "application/cap+xml"
TAKEN_MEDIA = (CAP_MEDIA, "application/xml", "text/xml")
AlertId = Annotated[int, Path(ge=1, le=2**31 - 1, description="the alert's number")]


class CapCheckOut(BaseModel):
    action: str = Field(description="issue | update | cancel | none: what taking the message does")
    msg_type: str
    status: str
    exercise: bool = Field(description="Exercise and Test are drills (演练), never real warnings")
    version: str = Field(description="the CAP version it came in (1.1 is upgraded to 1.2)")
    level: str | None
    level_from: str | None = Field(description="parameter or severity")
    hazard: str | None
    title: str | None
    units: list[str]
    unit_names: list[str]
    alert_id: int | None = Field(description="the alert an Update or Cancel applies to")
    left_aside: list[str] = Field(description="what the message carries that is not used, and why")
    unknown_references: list[str]
    already_taken: bool
    note: str = ""


class CapTakenOut(BaseModel):
    outcome: str = Field(description="issued | updated | lifted | unchanged")
    duplicate: bool = Field(description="the message had been taken before: nothing was done now")
    alert: AlertOut | None
    check: CapCheckOut


def importer(core: Core) -> CapImporter:
    return CapImporter(core.db, core.clock, core.alerts, core.cap_mapping)


def check_out(p: Preview) -> CapCheckOut:
    m, r = p.mapped, p.resolved
    return CapCheckOut(
        action=p.action,
        msg_type=p.message.msg_type,
        status=p.message.status,
        exercise=p.message.exercise,
        version=p.message.version,
        level=m.level.value if m.level else None,
        level_from=m.level_from or None,
        hazard=m.hazard or None,
        title=m.title or None,
        units=r.units if r else [],
        unit_names=r.names if r else [],
        alert_id=p.alert_id,
        left_aside=m.ignored + (r.elsewhere if r else []),
        unknown_references=p.unknown_references,
        already_taken=p.already is not None,
        note=p.note,
    )


def refused(exc: CapRefused) -> Problem:
    where = exc.element or "the document"
    return Problem(
        exc.status, exc.slug, "The CAP message is refused", f"{where}: {exc.message}", element=exc.element or None
    )


async def _body(request: Request) -> bytes:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind and kind not in TAKEN_MEDIA:  # none said: the body is taken as the message it is meant to be
        raise Problem(415, "unsupported-media-type", "Send the CAP message as application/cap+xml", f"got {kind!r}")
    return await request.body()


@router.post(
    "/api/v1/cap",
    status_code=201,
    response_model=CapTakenOut | CapCheckOut,
    responses=documented(400, 401, 403, 409, 413, 415, 422),
    openapi_extra={"requestBody": {"content": {CAP_MEDIA: {"schema": {"type": "string"}}}, "required": True}},
)
async def take_cap(
    request: Request,
    response: Response,
    core: CoreDep,
    who: Issuer,
    check: Annotated[bool, Query(description="only say what taking it would do; nothing is issued")] = False,
) -> CapTakenOut | CapCheckOut:
    """Take a CAP 1.2 (or 1.1) message: an Alert issues, an Update updates and a Cancel lifts the alert its
    references name. The same message again (sender and identifier) is taken once. A township key takes only
    messages inside its subtree. Refusals are problem+json naming the element (`element`)."""
    data = await _body(request)
    try:
        if check:
            response.status_code = 200
            return check_out(await importer(core).check(data, who))
        taken = await importer(core).take(data, who)
    except CapRefused as exc:
        raise refused(exc) from exc
    except Forbidden as exc:
        raise Problem(403, "forbidden", "This key may not do that", str(exc)) from exc
    alert = await core.alerts.get(taken.alert_id) if taken.alert_id is not None else None
    if taken.duplicate or taken.outcome in ("lifted", "unchanged"):
        response.status_code = 200
    if alert is not None and alert.id is not None:
        response.headers["Location"] = alert_links(alert.id)["self"]
    log.info("api.cap_taken", alert_id=taken.alert_id, outcome=taken.outcome, duplicate=taken.duplicate)
    return CapTakenOut(
        outcome=taken.outcome,
        duplicate=taken.duplicate,
        alert=AlertOut.of(alert) if alert is not None else None,
        check=check_out(taken.preview),
    )


def _cap_response(body: bytes) -> Response:
    return Response(body, media_type=CAP_MEDIA)


@router.get(
    "/api/v1/alerts/{alert_id}/cap",
    response_class=Response,
    responses={**documented(401, 404), 200: {"content": {CAP_MEDIA: {}}, "description": "the alert as CAP 1.2"}},
)
async def alert_as_cap(alert_id: AlertId, core: CoreDep, who: Reader) -> Response:
    """The alert as a CAP 1.2 message: an Update referencing its chain if it replaced another, its Cancel once
    lifted; the level is the `level` parameter."""
    async with core.db.session() as s:
        alert = await visible_alert(s, who, alert_id)
        if alert is None:
            raise Problem(404, "alert-not-found", "No such alert", f"there is no alert {alert_id}")
        return _cap_response(await export_alert(s, alert, core.cap_identity))


@router.get("/cap/feed.atom", response_class=Response, responses={200: {"content": {"application/atom+xml": {}}}})
async def cap_feed(core: CoreDep) -> Response:
    """Public: the active real warnings (no drills), newest first, each linking its CAP message."""
    async with core.db.session() as s:
        alerts = await public_alerts(s)
    body = atom_feed(alerts, base_url=core.public_url, title=core.cap_identity.sender_name, now=core.clock.now())
    return Response(body, media_type="application/atom+xml")


@router.get("/cap/alerts/{alert_id}", response_class=Response, responses={200: {"content": {CAP_MEDIA: {}}}})
async def public_cap(alert_id: AlertId, core: CoreDep) -> Response:
    """Public: an active real warning as CAP 1.2; anything else (a drill, a lifted or unknown alert) is 404."""
    async with core.db.session() as s:
        alert = await s.get(Alert, alert_id)
        if alert is None or alert.exercise or alert.status != AlertStatus.ACTIVE.value:
            raise Problem(404, "alert-not-found", "No such public warning", f"alert {alert_id} is not a public warning")
        return _cap_response(await export_alert(s, alert, core.cap_identity))
