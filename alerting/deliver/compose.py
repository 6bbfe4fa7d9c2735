"""Turning claimed delivery rows into messages an adapter can carry, with everything looked up per batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar, cast

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from alerting.deliver.messages import About, AlertText, render
from alerting.deliver.port import Address, OutboundMessage
from alerting.deliver.tokens import TokenSigner
from alerting.model.clock import Clock
from alerting.model.domain import ChannelKind, Level, Purpose, Role, TaskKind
from alerting.store.tables import Alert, Delivery, Device, OrgUnit, Person, Target, core_table

_T = TypeVar("_T")
_K = TypeVar("_K", str, int)


@dataclass(frozen=True)
class Composer:
    signer: TokenSigner
    public_url: str
    clock: Clock

    def ack_url(self, delivery_id: str) -> str:
        return f"{self.public_url.rstrip('/')}/ack/{self.signer.sign(delivery_id, self.clock.now())}"

    async def compose(self, s: AsyncSession, rows: Sequence[Delivery]) -> dict[str, OutboundMessage]:
        alerts = await _by_id(s, Alert, {r.alert_id for r in rows})
        # a first wave goes to the target itself; only escalations and calls for help speak about someone else
        targets = await _by_id(s, Target, {r.target_id for r in rows if _may_be_about_another(r)})
        person_ids = {r.person_id for r in rows if r.person_id} | {t.person_id for t in targets.values() if t.person_id}
        people = await _by_id(s, Person, person_ids)
        devices = await _by_id(s, Device, {r.device_id for r in rows if r.device_id})
        units = await _by_id(s, OrgUnit, {t.unit_code for t in targets.values()})
        out: dict[str, OutboundMessage] = {}
        for r in rows:
            alert, target = alerts[r.alert_id], targets.get(r.target_id)
            person = people.get(r.person_id) if r.person_id else None
            device = devices.get(r.device_id) if r.device_id else None
            task = TaskKind(r.detail["task"]) if r.detail and r.detail.get("task") else None
            purpose = Purpose(r.purpose)
            about = (
                _about(target, people, units)
                if target is not None and (r.person_id != target.person_id or purpose is Purpose.HELP)
                else None
            )
            # a lifted notice needs no answer; a device answers over its own path
            wants_answer = purpose not in (Purpose.LIFT, Purpose.HELP) and r.channel not in (
                ChannelKind.DEVICE,
                ChannelKind.BROADCAST,
            )
            ack_url = self.ack_url(r.id) if wants_answer else None
            text = render(
                AlertText(
                    Level(alert.level), alert.hazard, alert.title, alert.text, alert.instructions, alert.exercise
                ),
                purpose,
                ack_url=ack_url,
                about=about,
                task=task,
            )
            out[r.id] = OutboundMessage(
                delivery_id=r.id,
                alert_id=r.alert_id,
                channel=ChannelKind(r.channel),
                purpose=purpose,
                address=Address(
                    person_id=person.id if person else None,
                    name=person.name if person else (device.name if device else ""),
                    phone=person.phone if person else None,
                    wecom_userid=person.wecom_userid if person else None,
                    email=person.email if person else None,
                    device_id=device.id if device else None,
                    device_kind=device.kind if device else None,
                ),
                level=Level(alert.level),
                hazard=alert.hazard,
                exercise=alert.exercise,
                title=text.title,
                text=text.text,
                short_text=text.short_text,
                spoken_text=text.spoken_text,
                ack_url=ack_url,
                attempt=r.attempts + 1,
                step=r.step,
                task=task,
                about=about.name if about else None,
                issued_at=alert.created_at,
            )
        return out


def _may_be_about_another(r: Delivery) -> bool:
    return r.step > 0 or r.purpose == Purpose.HELP.value


def _about(target: Target, people: dict[str, Person], units: dict[str, OrgUnit]) -> About:
    unit = units.get(target.unit_code)
    unit_name = unit.name if unit else target.unit_code
    if target.person_id and target.person_id in people:
        role = Role(target.role).label if target.role in Role.__members__.values() else target.role
        return About(people[target.person_id].name, role, unit_name)
    return About(target.device_id or "", "预警设备", unit_name)


async def _by_id(s: AsyncSession, model: type[_T], ids: set[_K]) -> dict[_K, _T]:
    """Rows by primary key, read as plain rows (they have the model's attribute names, and cost a fraction of
    loading ORM objects, which matters at thousands of messages a second)."""
    table = core_table(model)  # type: ignore[arg-type]
    key = table.primary_key.columns.values()[0]
    found: dict[_K, _T] = {}
    id_list = list(ids)
    for i in range(0, len(id_list), 500):
        conn = await s.connection()
        for row in await conn.execute(select(table).where(key.in_(id_list[i : i + 500]))):
            found[getattr(row, key.name)] = cast(_T, row)
    return found
