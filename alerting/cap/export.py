"""An alert as CAP 1.2: what other systems and the public read. Every export validates against the shipped schema.

- identifier: `ZZZZZZDDDUUUXX_YYYYMMDDhhmmss_N` (GB/T 35965.1: the issuing unit's 14-character code, the time in
  Beijing time, a digit telling apart messages of the same second) when the county configures its unit code
  (`cap_issuer_code`); otherwise `<sender>.alert.<id>` (and `.cancel` for its lift).
- an alert that replaced another is an Update referencing every message of its chain, oldest first; a lifted
  alert is exported as its Cancel, referencing the alert and its chain.
- the level is a parameter (`level`: red/orange/yellow/blue) beside the severity it stands for.
- status Exercise for a drill, Actual otherwise; the areas are the target units, with their division codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from xml.etree.ElementTree import Element, SubElement, tostring

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting.cap.schema import CAP12
from alerting.model.clock import SHANGHAI, utc
from alerting.model.domain import AlertStatus, Level
from alerting.store.tables import Alert, OrgUnit

_CATEGORY = {"地质灾害": "Geo", "森林火险": "Fire"}  # the other hazards in the warning texts are weather: Met
_URGENCY = {Level.RED: "Immediate", Level.ORANGE: "Immediate", Level.YELLOW: "Expected", Level.BLUE: "Expected"}


@dataclass(frozen=True)
class CapIdentity:
    """Who the exports say they are from."""

    sender: str = "jiaoying"
    sender_name: str = "叫应 jiaoying"
    issuer_code: str | None = None  # the 14-character GB/T 35965.1 issuing unit code; None: plain identifiers


def cap_time(at: datetime) -> str:
    """CAP's time: seconds, Beijing time with its offset (the profile's 北京时间 +08:00)."""
    return utc(at).astimezone(SHANGHAI).strftime("%Y-%m-%dT%H:%M:%S+08:00")


async def _sequence(s: AsyncSession, at: datetime, alert_id: int) -> int:
    """N of the GB/T identifier: the alerts created earlier in the same second."""
    second = utc(at).replace(microsecond=0)
    n = await s.scalar(
        select(func.count())
        .select_from(Alert)
        .where(
            col(Alert.created_at) >= second,
            col(Alert.created_at) < second + timedelta(seconds=1),
            col(Alert.id) < alert_id,
        )
    )
    return int(n or 0) % 10


async def identifier(s: AsyncSession, identity: CapIdentity, alert: Alert, *, cancel: bool = False) -> str:
    assert alert.id is not None
    if identity.issuer_code is None:
        return f"{identity.sender}.alert.{alert.id}" + (".cancel" if cancel else "")
    at = alert.ended_at if cancel and alert.ended_at else alert.created_at
    n = 9 if cancel else await _sequence(s, at, alert.id)  # a lift takes the last digit of its second
    return f"{identity.issuer_code}_{utc(at).astimezone(SHANGHAI):%Y%m%d%H%M%S}_{n}"


async def chain(s: AsyncSession, alert: Alert) -> list[Alert]:
    """The alerts this one replaced, oldest first."""
    out: list[Alert] = []
    prev = alert.supersedes_id
    while prev is not None:
        older = await s.get(Alert, prev)
        if older is None:
            break
        out.insert(0, older)
        prev = older.supersedes_id
    return out


async def export_alert(s: AsyncSession, alert: Alert, identity: CapIdentity) -> bytes:
    """The alert's CAP 1.2 message (for a lifted alert: its Cancel), UTF-8 with its XML declaration."""
    assert alert.id is not None
    lifted = alert.status == AlertStatus.CANCELLED.value
    earlier = await chain(s, alert)
    refs = [f"{identity.sender},{await identifier(s, identity, a)},{cap_time(a.created_at)}" for a in earlier]
    if lifted:
        refs.append(f"{identity.sender},{await identifier(s, identity, alert)},{cap_time(alert.created_at)}")
        msg_type, sent = "Cancel", alert.ended_at or alert.created_at
    else:
        msg_type, sent = ("Update" if earlier else "Alert"), alert.created_at
    units = {
        u.code: u.name
        for u in (await s.execute(select(OrgUnit).where(col(OrgUnit.code).in_(alert.target_units)))).scalars()
    }
    root = Element(f"{{{CAP12}}}alert")

    def add(parent: Element, name: str, text: str) -> Element:
        e = SubElement(parent, f"{{{CAP12}}}{name}")
        e.text = text
        return e

    add(root, "identifier", await identifier(s, identity, alert, cancel=lifted))
    add(root, "sender", identity.sender)
    add(root, "sent", cap_time(sent))
    add(root, "status", "Exercise" if alert.exercise else "Actual")
    add(root, "msgType", msg_type)
    add(root, "scope", "Public")
    if alert.exercise:
        add(root, "note", "演练 exercise: not a real warning")
    elif lifted and alert.end_reason:
        add(root, "note", alert.end_reason)
    if refs:
        add(root, "references", " ".join(refs))
    level = Level(alert.level)
    info = SubElement(root, f"{{{CAP12}}}info")
    add(info, "language", "zh-CN")
    add(info, "category", _CATEGORY.get(alert.hazard, "Met"))
    add(info, "event", alert.hazard)
    if lifted:
        add(info, "responseType", "AllClear")
    add(info, "urgency", "Past" if lifted else _URGENCY[level])
    add(info, "severity", level.cap_severity)
    add(info, "certainty", "Likely")
    add(info, "senderName", identity.sender_name)
    add(info, "headline", f"解除：{alert.title}" if lifted else alert.title)
    add(info, "description", alert.text)
    if alert.instructions:
        add(info, "instruction", alert.instructions)
    parameter = SubElement(info, f"{{{CAP12}}}parameter")
    add(parameter, "valueName", "level")
    add(parameter, "value", level.value)
    area = SubElement(info, f"{{{CAP12}}}area")
    add(area, "areaDesc", "、".join(units.get(c, c) for c in alert.target_units))
    for code in alert.target_units:
        geocode = SubElement(area, f"{{{CAP12}}}geocode")
        add(geocode, "valueName", "行政区划代码")
        add(geocode, "value", code.ljust(12, "0") if len(code) < 12 else code)
    return bytes(tostring(root, encoding="utf-8", xml_declaration=True, default_namespace=CAP12))
