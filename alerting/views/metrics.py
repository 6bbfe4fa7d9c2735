"""The figures /metrics shows, read from the store at each scrape: what the duty room and whoever keeps the engine
running watch during a storm. Read-only, a handful of grouped queries over the active alerts and the queue.

Taken from the store rather than counted in memory, so any process serving /metrics (several serve processes, the
engines elsewhere) shows the same county-wide numbers, and a restart loses nothing.
"""

from __future__ import annotations

import asyncio
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting.audit import configured
from alerting.audit.checkpoints import CheckpointError, latest, read_checkpoints
from alerting.audit.keys import Keyring
from alerting.model.clock import utc
from alerting.model.domain import AlertStatus, DeadlineState, TargetState
from alerting.store.db import Database
from alerting.store.tables import Acknowledgement, Alert, Deadline, Delivery, Target
from alerting.views.queue import queue_lines
from alerting.views.report.assemble import percentile


@dataclass
class ChannelQueue:
    due: int = 0  # pending and due now
    later: int = 0  # pending, due later (retries, waits)
    claimed: int = 0  # claimed by a dispatcher, not handed over yet
    at_provider: int = 0  # handed over, outcome not recorded yet
    oldest_due_s: float = 0.0  # how long the oldest due delivery has waited (0: none waits)


@dataclass
class AlertFigures:
    level: str
    open_targets: int = 0
    targets: int = 0
    first_send_s: float | None = None  # from issuing to the first delivery handed to a provider
    answer_median_s: float | None = None  # from issuing to each answer, over those who answered
    answer_p90_s: float | None = None


@dataclass
class StoreFigures:
    deliveries: dict[tuple[str, str], int] = field(default_factory=dict)  # (channel, state) of active alerts
    queue: dict[str, ChannelQueue] = field(default_factory=dict)  # by channel, every alert
    answers: dict[str, int] = field(default_factory=dict)  # counted answers of active alerts, by channel
    alerts: dict[int, AlertFigures] = field(default_factory=dict)  # the active alerts
    deadline_lag_s: float = 0.0  # how overdue the most overdue pending deadline is (0: none is)
    checkpoint_age_s: float | None = None  # since the newest audit checkpoint (None: none configured or written)


async def store_figures(db: Database, now: datetime) -> StoreFigures:
    figures = StoreFigures()
    async with db.session() as s:
        active = {
            int(i or 0): (utc(created), str(level))
            for i, created, level in await s.execute(
                select(col(Alert.id), col(Alert.created_at), col(Alert.level)).where(
                    col(Alert.status) == AlertStatus.ACTIVE.value
                )
            )
        }
        ids = list(active)
        figures.alerts = {i: AlertFigures(level=level) for i, (_, level) in active.items()}
        if ids:
            await _active_alerts(s, ids, active, figures)
        overdue = await s.scalar(
            select(func.min(col(Deadline.due_at))).where(
                col(Deadline.state) == DeadlineState.PENDING.value, col(Deadline.due_at) <= now
            )
        )
    if overdue is not None:
        figures.deadline_lag_s = max(0.0, (utc(now) - utc(overdue)).total_seconds())
    for line in await queue_lines(db, now):
        q = figures.queue.setdefault(line.channel, ChannelQueue())
        q.due, q.later = q.due + line.due, q.later + line.later
        q.claimed, q.at_provider = q.claimed + line.claimed, q.at_provider + line.at_provider
        q.oldest_due_s = max(q.oldest_due_s, line.oldest_due_s or 0.0)
    figures.checkpoint_age_s = await _checkpoint_age(now)
    return figures


async def _active_alerts(
    s: AsyncSession, ids: list[int], active: dict[int, tuple[datetime, str]], figures: StoreFigures
) -> None:
    for channel, state, n in await s.execute(
        select(col(Delivery.channel), col(Delivery.state), func.count())
        .where(col(Delivery.alert_id).in_(ids))
        .group_by(col(Delivery.channel), col(Delivery.state))
    ):
        figures.deliveries[(str(channel), str(state))] = int(n)
    for channel, n in await s.execute(
        select(col(Acknowledgement.channel), func.count())
        .where(col(Acknowledgement.alert_id).in_(ids), col(Acknowledgement.counted))
        .group_by(col(Acknowledgement.channel))
    ):
        figures.answers[str(channel)] = int(n)
    for alert_id, state, n in await s.execute(
        select(col(Target.alert_id), col(Target.state), func.count())
        .where(col(Target.alert_id).in_(ids))
        .group_by(col(Target.alert_id), col(Target.state))
    ):
        a = figures.alerts[int(alert_id)]
        a.targets += int(n)
        a.open_targets += int(n) if state == TargetState.OPEN.value else 0
    for alert_id, first in await s.execute(
        select(col(Delivery.alert_id), func.min(col(Delivery.handed_at)))
        .where(col(Delivery.alert_id).in_(ids))
        .group_by(col(Delivery.alert_id))
    ):
        if first is not None:
            figures.alerts[int(alert_id)].first_send_s = (utc(first) - active[int(alert_id)][0]).total_seconds()
    waited: dict[int, list[float]] = defaultdict(list)
    for alert_id, at in await s.execute(
        select(col(Target.alert_id), col(Target.answered_at)).where(
            col(Target.alert_id).in_(ids), col(Target.answered_at).is_not(None)
        )
    ):
        if at is not None:
            waited[int(alert_id)].append((utc(at) - active[int(alert_id)][0]).total_seconds())
    for alert_id, times in waited.items():
        a = figures.alerts[alert_id]
        a.answer_median_s = statistics.median(times)
        a.answer_p90_s = percentile(times, 0.9)  # nearest rank, as the report counts it


async def _checkpoint_age(now: datetime) -> float | None:
    setup = configured.current()
    if setup.checkpoints is None:
        return None
    newest = await asyncio.to_thread(_newest_checkpoint, setup.checkpoints, setup.keyring)
    return None if newest is None else max(0.0, (utc(now) - utc(newest)).total_seconds())


# the file grows by a line a minute all season: read and verified again only when it changed, not at every scrape
_newest_seen: dict[tuple[Path, int, int], datetime | None] = {}


def _newest_checkpoint(path: Path, keyring: Keyring) -> datetime | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    key = (path, stat.st_size, stat.st_mtime_ns)
    if key not in _newest_seen:
        try:
            newest = latest(read_checkpoints(path, keyring))
        except CheckpointError:
            newest = None  # `audit verify` names what is wrong with the file; here it only has no age
        _newest_seen.clear()
        _newest_seen[key] = newest.at if newest else None
    return _newest_seen[key]
