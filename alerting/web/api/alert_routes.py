"""/api/v1/alerts: issue, read, follow and lift alerts."""

from __future__ import annotations

import re
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Header, Query, Response

from alerting.issue.alerts import AlertChange, AlertNotActive, AlertNotFound, AlertRequest, AlertUnchanged, Issued
from alerting.issue.once import KEY_MAX, KeyReused, RequestKey, issue_once
from alerting.issue.planning import UnknownUnits
from alerting.model.access import Forbidden, Principal, check_alert, check_units
from alerting.model.domain import AlertStatus, TargetState
from alerting.web import acting
from alerting.web.api.auth import CoreDep, Issuer, Reader
from alerting.web.api.numbers import AlertId, Offset
from alerting.web.api.problems import Problem, documented
from alerting.web.api.queries import alerts_page, recipients_page
from alerting.web.api.schemas import (
    AlertDetail,
    AlertOut,
    CancelIn,
    CancelledOut,
    IssuedOut,
    Page,
    RecipientOut,
    alert_links,
    progress_out,
)
from alerting.web.core import Core

log = structlog.get_logger()

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"], responses=documented(401, 403, 422))

Limit = Annotated[int, Query(ge=1, le=1000)]


def _not_found(alert_id: int) -> Problem:
    return Problem(404, "alert-not-found", "No such alert", f"there is no alert {alert_id}")


async def _require_visible(core: Core, who: Principal, alert_id: int) -> None:
    """A township key is told nothing about alerts that do not reach its subtree: for it they do not exist."""
    if who.county_wide:
        return
    async with core.db.session() as s:
        if not await check_alert(s, who, alert_id):
            raise _not_found(alert_id)


_KEY_HEADER = "Idempotency-Key"
_KEY_TEXT = re.compile(rf"[\x21-\x7e]{{1,{KEY_MAX}}}")  # printable ASCII, as a header value travels safely

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=_KEY_HEADER,
        description=(
            "any unique string (a UUID, say), up to 255 printable ASCII characters. The same key sent again by "
            "the same API key within 24 hours answers 200 with the alert the first request issued (header "
            "`Idempotent-Replayed: true`) and issues nothing; two requests with one key at the same moment issue "
            "one alert. The same key with a different body is refused (422)."
        ),
    ),
]


def _key_problem(message: str, **extra: Any) -> Problem:
    return Problem(
        422,
        "idempotency-key",
        "The Idempotency-Key cannot be used",
        f"{_KEY_HEADER}: {message}",
        errors=[{"field": _KEY_HEADER, "location": "header", "message": message}],
        **extra,
    )


@router.post(
    "",
    status_code=201,
    response_model=IssuedOut,
    responses={
        200: {
            "model": IssuedOut,
            "description": "a repeat of an earlier request's Idempotency-Key: the alert it issued; nothing new",
            "headers": {
                "Idempotent-Replayed": {
                    "description": "`true`: this answer repeats the first",
                    "schema": {"type": "string"},
                }
            },
        },
        **documented(403, 422),
    },
)
async def issue_alert(
    req: AlertRequest, core: CoreDep, who: Issuer, response: Response, idempotency_key: IdempotencyKey = None
) -> IssuedOut:
    """Issue a warning to every responsible person (and device) in the subtree of the given units.
    A township key may issue only to units inside its own subtree. Send an `Idempotency-Key` to make a retry safe:
    201 when this request issued the alert, 200 when an earlier one with the same key did."""
    if idempotency_key is not None and not _KEY_TEXT.fullmatch(idempotency_key):
        raise _key_problem(f"must be 1 to {KEY_MAX} printable ASCII characters without spaces")
    async with core.db.session() as s:
        outside = await check_units(s, who, req.units)
    if outside:
        raise Forbidden(f"units outside the key's subtree ({who.unit_code}): {', '.join(outside)}")
    try:
        if idempotency_key is None:
            issued = await core.alerts.trigger(req, actor=who.actor)
        else:
            outcome = await issue_once(
                core.alerts, req, actor=who.actor, key=RequestKey.of(who.actor, idempotency_key, req)
            )
            issued = outcome.issued
            if outcome.repeated:
                response.status_code = 200
                response.headers["Idempotent-Replayed"] = "true"
                return _issued_out(issued, response)
    except KeyReused as exc:
        raise _key_problem(
            f"was already used for a different request, which issued alert {exc.alert_id}; "
            "send a new key for a new alert",
            alert_id=exc.alert_id,
        ) from exc
    except UnknownUnits as exc:
        raise Problem(
            422,
            "unknown-units",
            "Unknown unit codes",
            f"no unit has the code(s): {', '.join(exc.codes)}",
            unknown_units=exc.codes,
            errors=[
                {
                    "field": f"units.{i}",
                    "location": "body",
                    "pointer": f"#/units/{i}",
                    "message": f"unknown unit code {code}",
                }
                for i, code in enumerate(req.units)
                if code in exc.codes
            ],
        ) from exc
    log.info("api.alert_issued", alert_id=issued.alert_id, actor=who.actor)
    return _issued_out(issued, response)


def _issued_out(issued: Issued, response: Response) -> IssuedOut:
    links = alert_links(issued.alert_id)
    response.headers["Location"] = links["self"]
    return IssuedOut(
        id=issued.alert_id,
        targets=issued.targets,
        deliveries=issued.deliveries,
        by_channel=issued.by_channel,
        unreachable=issued.unreachable,
        links=links,
    )


@router.get("", response_model=Page[AlertOut])
async def list_alerts(
    core: CoreDep,
    who: Reader,
    active: Annotated[bool, Query(description="only alerts still active")] = False,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[AlertOut]:
    """Alerts, newest first (for a township key, those reaching its subtree)."""
    rows, total = await alerts_page(core.db, limit=limit, offset=offset, active_only=active, scope=who)
    return Page[AlertOut](items=[AlertOut.of(a) for a in rows], total=total, limit=limit, offset=offset)


@router.get("/{alert_id}", response_model=AlertDetail, responses=documented(404))
async def get_alert(alert_id: AlertId, core: CoreDep, who: Reader) -> AlertDetail:
    """The alert and how far its loop has closed: targets by state, deliveries by channel and state
    (for a township key, counted inside its subtree)."""
    await _require_visible(core, who, alert_id)
    try:
        progress = await core.alerts.progress(alert_id, within=who.unit_path)
    except AlertNotFound as exc:
        raise _not_found(alert_id) from exc
    sandboxed = {c.kind for c in core.channels if c.sandbox}
    base = AlertOut.of(progress.alert)
    return AlertDetail(**base.model_dump(), plan=progress.alert.plan, progress=progress_out(progress, sandboxed))


@router.post("/{alert_id}/cancel", response_model=CancelledOut, responses=documented(404, 409, 422))
async def cancel_alert(alert_id: AlertId, body: CancelIn, core: CoreDep, who: Issuer) -> CancelledOut:
    """解除: stop what is not yet sent and tell everyone the warning reached that it is lifted.
    A township key may lift only an alert whose every target unit is inside its subtree."""
    try:
        lifted = await acting.cancel(core, who, alert_id, body.reason)
    except (AlertNotFound, acting.NotVisible) as exc:
        raise _not_found(alert_id) from exc
    except AlertNotActive as exc:
        raise Problem(409, "alert-not-active", "The alert is not active", str(exc)) from exc
    log.info("api.alert_cancelled", alert_id=alert_id, actor=who.actor)
    return CancelledOut(
        id=alert_id,
        status=AlertStatus.CANCELLED.value,
        cancelled_deliveries=lifted.cancelled_deliveries,
        lift_notices=lifted.lift_notices,
        links=alert_links(alert_id),
    )


@router.get("/{alert_id}/recipients", response_model=Page[RecipientOut], responses=documented(404))
async def list_recipients(
    alert_id: AlertId,
    core: CoreDep,
    who: Reader,
    state: Annotated[TargetState | None, Query(description="only targets in this state, e.g. open")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[RecipientOut]:
    """Who must answer, who did and over what; phone numbers are masked. A township key sees its subtree only."""
    await _require_visible(core, who, alert_id)
    try:
        await core.alerts.get(alert_id)
    except AlertNotFound as exc:
        raise _not_found(alert_id) from exc
    items, total = await recipients_page(core.db, alert_id, limit=limit, offset=offset, state=state, scope=who)
    return Page[RecipientOut](items=items, total=total, limit=limit, offset=offset)


@router.post("/{alert_id}/update", response_model=IssuedOut, status_code=201, responses=documented(404, 409, 422))
async def update_alert(
    alert_id: AlertId, body: AlertChange, response: Response, core: CoreDep, who: Issuer
) -> IssuedOut:
    """Replace the alert (e.g. raise orange to red). A raised level reaches everyone again; otherwise those who
    answered keep their answer and only the silent are called. The old alert is superseded and stops.
    A township key may update only an alert whose every target unit is inside its subtree."""
    try:
        issued = await acting.update(core, who, alert_id, body)
    except (AlertNotFound, acting.NotVisible) as exc:
        raise _not_found(alert_id) from exc
    except AlertNotActive as exc:
        raise Problem(409, "alert-not-active", "The alert cannot be updated", str(exc)) from exc
    except AlertUnchanged as exc:
        raise Problem(422, "alert-unchanged", "The update changes nothing", str(exc)) from exc
    log.info("api.alert_updated", alert_id=alert_id, new_alert=issued.alert_id, actor=who.actor)
    return _issued_out(issued, response)
