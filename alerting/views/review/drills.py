"""The yearly drill record (演练记录): every exercise alert of a year, apart from real warnings."""

from __future__ import annotations

import statistics
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlmodel import col

from alerting.model.clock import SHANGHAI, utc
from alerting.model.domain import AlertStatus, TargetState
from alerting.store.db import Database
from alerting.store.tables import Alert, Target


class DrillRow(BaseModel):
    alert_id: int
    issued_at: datetime
    level: str
    hazard: str
    title: str
    units: list[str]
    status: str
    targets: int
    answered: int  # by themselves
    answered_for: int  # by someone above them
    silent: int
    escalated: int
    median_answer_s: float | None

    @property
    def answer_rate(self) -> float:
        return (self.answered + self.answered_for) / self.targets if self.targets else 0.0


class DrillRecord(BaseModel):
    year: int
    drills: list[DrillRow]

    @property
    def held(self) -> int:
        return len(self.drills)

    @property
    def reached(self) -> int:
        return sum(d.targets for d in self.drills)

    @property
    def answer_rate(self) -> float:
        closed = sum(d.answered + d.answered_for for d in self.drills)
        return closed / self.reached if self.reached else 0.0


async def drill_record(db: Database, year: int) -> DrillRecord:
    """Exercises issued in `year` (Asia/Shanghai), oldest first, with how their loops closed (updates counted once)."""
    start = datetime(year, 1, 1, tzinfo=SHANGHAI)
    end = datetime(year + 1, 1, 1, tzinfo=SHANGHAI)
    async with db.session() as s:
        alerts = list(
            (
                await s.execute(
                    select(Alert)
                    .where(
                        col(Alert.exercise),
                        col(Alert.created_at) >= utc(start),
                        col(Alert.created_at) < utc(end),
                        # an updated drill is one drill: its last version stands for it, answers carried over
                        col(Alert.status) != AlertStatus.SUPERSEDED.value,
                    )
                    .order_by(col(Alert.created_at))
                )
            ).scalars()
        )
        ids = [a.id for a in alerts]
        counts = (
            await s.execute(
                select(col(Target.alert_id), col(Target.state), func.count(), func.count().filter(col(Target.step) > 0))
                .where(col(Target.alert_id).in_(ids))
                .group_by(col(Target.alert_id), col(Target.state))
            )
        ).all()
        answers = (
            await s.execute(
                select(col(Target.alert_id), col(Target.answered_at)).where(
                    col(Target.alert_id).in_(ids), col(Target.answered_at).is_not(None)
                )
            )
        ).all()
    by_state: dict[int, dict[str, int]] = {}
    escalated: dict[int, int] = {}
    for alert_id, state, n, up in counts:
        by_state.setdefault(alert_id, {})[state] = int(n)
        escalated[alert_id] = escalated.get(alert_id, 0) + int(up or 0)
    created = {a.id: a.created_at for a in alerts}
    waits: dict[int, list[float]] = {}
    for alert_id, at in answers:
        assert at is not None
        waits.setdefault(alert_id, []).append((utc(at) - created[alert_id]).total_seconds())
    rows = []
    for a in alerts:
        assert a.id is not None
        st = by_state.get(a.id, {})
        rows.append(
            DrillRow(
                alert_id=a.id,
                issued_at=a.created_at,
                level=a.level,
                hazard=a.hazard,
                title=a.title,
                units=a.target_units,
                status=a.status,
                targets=sum(st.values()),
                answered=st.get(TargetState.ANSWERED.value, 0),
                answered_for=st.get(TargetState.ANSWERED_FOR.value, 0),
                silent=st.get(TargetState.OPEN.value, 0) + st.get(TargetState.CANCELLED.value, 0),
                escalated=escalated.get(a.id, 0),
                median_answer_s=statistics.median(waits[a.id]) if waits.get(a.id) else None,
            )
        )
    return DrillRecord(year=year, drills=rows)
