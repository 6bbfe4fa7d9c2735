"""A call for help goes up at once: the township on duty and the county duty room hear it now, not at a deadline."""

from __future__ import annotations

from collections.abc import Callable

import structlog
from sqlalchemy import insert

from alerting.audit import chain as audit
from alerting.issue.planning import delivery_row, load_contacts
from alerting.model.clock import Clock
from alerting.model.domain import ChannelKind, Level, Purpose
from alerting.model.plan import Who
from alerting.store.db import Database
from alerting.store.tables import Alert, Delivery, Target
from escalation.recipients import contacts_for

log = structlog.get_logger()

HELP_CHANNELS = [ChannelKind.VOICE, ChannelKind.SMS, ChannelKind.WECOM]


class HelpEscalation:
    def __init__(self, db: Database, clock: Clock, wake: Callable[[], None] = lambda: None) -> None:
        self.db, self.clock, self.wake = db, clock, wake

    async def __call__(self, alert_id: int, target_id: str) -> None:
        now = self.clock.now()
        async with self.db.session() as s:
            target = await s.get(Target, target_id)
            alert = await s.get(Alert, alert_id)
            if target is None or alert is None:
                return
            people = [
                p
                for who in (Who.TOWNSHIP_DUTY, Who.COUNTY_DUTY)
                for p in await contacts_for(s, who, target, now)
                if p != target.person_id
            ]
            people = list(dict.fromkeys(people))
            contacts = await load_contacts(s, people)
            rows = [
                # a call for help goes out with the first waves, ahead of every escalation and lift notice
                delivery_row(
                    alert_id=alert_id,
                    target_id=target_id,
                    channel=ch,
                    purpose=Purpose.HELP,
                    step=target.step,
                    level=Level(alert.level),
                    now=now,
                    person_id=p,
                )
                for p in people
                if p in contacts
                for ch in HELP_CHANNELS
                if contacts[p].can_use(ch)
            ]
            if rows:
                await s.execute(insert(Delivery), rows)
            await audit.record(
                s,
                "help.escalated",
                actor="escalation",
                at=now,
                alert_id=alert_id,
                subject=target_id,
                data={"contacts": people, "deliveries": len(rows)},
            )
        log.warning("help.escalated", alert_id=alert_id, target_id=target_id, contacts=len(people))
        self.wake()
