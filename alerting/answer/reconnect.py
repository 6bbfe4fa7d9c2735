"""After the link to the devices was lost: send again what they may not have answered, and give them time to.

While the engine or the broker was down, a siren's ack can be lost for good (mosquitto keeps at most
`max_queued_messages` for a client that is away, and nothing across its own restart without persistence). Writing
such a siren off would send the village head out to 鸣锣吹哨 for a siren that sounded. So once the device channel
has taken in what the broker kept for it, every command sent before that connection came up and still not
confirmed is sent again with the same command_id (a device that has it only confirms again, it does not replay
it). Its target's next deadline, if it falls due sooner, is moved to give the device a fresh window, and so is
that of a device whose first command is only going out now (the deadline was set when the alert was issued, and
the engine was down or the link lost in between). Each alert gets one audit entry saying which devices were asked
again and whose deadlines moved.

The devices lose the link too: a siren that announces itself online again (a fresh status, not the retained one
read again) missed whatever was sent while it was away, since it reconnects without a session. Its unconfirmed
commands are sent again as well. Its deadlines are moved only when it comes back just after the engine's own link
did (sirens reconnect after the broker, with backoff, and an embedded broker comes up with the engine): a siren
that keeps dropping off later must not keep postponing the village head's turn.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Row, and_, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting.audit import chain as audit
from alerting.model import deadlines
from alerting.model.domain import AlertStatus, ChannelKind, DeliveryState, Purpose, TargetState
from alerting.store.tables import Alert, Delivery, Target

ACTOR = "device-link"

# a delivery as _unconfirmed reads it: id, alert_id, target_id, device_id, state, sent_at
Unconfirmed = Row[str, int, str, str | None, str, datetime | None]

CONFIRMABLE = (DeliveryState.SENT.value, DeliveryState.DELIVERED.value)


@dataclass(frozen=True)
class Resent:
    commands: int  # deliveries queued to be sent again
    deadlines_moved: int
    devices: frozenset[str] = frozenset()  # the devices sent something again


async def resend_unconfirmed(s: AsyncSession, sent_before: datetime, now: datetime, window: timedelta) -> Resent:
    """Queue again every device command sent before `sent_before` that its device has not confirmed: a warning
    whose target is still open in an active alert (sent, or only "received"), or a lift the device never said it
    got. Every open target whose warning is not confirmed yet (asked again, or only going out now that the link
    is back) gets until now + `window` before its next step: a pending deadline due sooner is moved there."""
    rows = await _unconfirmed(s, lift_if=col(Delivery.sent_at) < sent_before)
    said = {"reason": "link to the devices restored; acks may have been lost", "sent_before": sent_before.isoformat()}
    return await _ask_again(s, rows, lambda _: sent_before, now, window, said)


async def resend_to_returning(
    s: AsyncSession, back_at: Mapping[str, datetime], now: datetime, window: timedelta | None
) -> Resent:
    """Queue again what each device in `back_at` was sent before it came back online and has not confirmed.
    With a `window` (only just after the engine's own link came back, see Inbound) their targets get that long
    from now; without one their deadlines stay where they are."""
    if not back_at:
        return Resent(0, 0)
    rows = await _unconfirmed(s, lift_if=true(), devices=back_at.keys())
    return await _ask_again(
        s, rows, lambda r: back_at[str(r.device_id)], now, window, {"reason": "the device came back online"}
    )


async def _ask_again(
    s: AsyncSession,
    rows: Sequence[Unconfirmed],
    missed_if_sent_before: Callable[[Unconfirmed], datetime],
    now: datetime,
    window: timedelta | None,
    said: Mapping[str, object],
) -> Resent:
    again = [
        r for r in rows if r.state in CONFIRMABLE and r.sent_at is not None and r.sent_at < missed_if_sent_before(r)
    ]
    if again:
        # the same guard again: a confirmation that was taken in since the read keeps its state
        await s.execute(
            update(Delivery)
            .where(col(Delivery.id).in_([r.id for r in again]), col(Delivery.state).in_(CONFIRMABLE))
            .values(state=DeliveryState.PENDING.value, next_attempt_at=now, claimed_by=None)
        )
    fresh = now + window if window is not None and rows else None
    moved = [] if fresh is None else await deadlines.give_time(s, {r.target_id for r in rows}, fresh)
    asked: dict[int, list[str]] = defaultdict(list)
    for r in again:
        asked[r.alert_id].append(str(r.device_id))
    given_time: dict[int, list[str]] = defaultdict(list)
    for alert_id, target_id in moved:
        given_time[alert_id].append(target_id)
    await audit.append(
        s,
        [
            audit.Entry(
                "device.asked_again",
                ACTOR,
                now,
                alert_id,
                data={
                    **said,
                    "devices": sorted(asked[alert_id]),
                    "deadlines_moved_to": fresh.isoformat() if fresh is not None and given_time[alert_id] else None,
                    "targets_given_time": sorted(given_time[alert_id]),
                },
            )
            for alert_id in sorted(asked.keys() | given_time.keys())
        ],
    )
    return Resent(len(again), len(moved), frozenset(str(r.device_id) for r in again))


async def _unconfirmed(
    s: AsyncSession, *, lift_if: ColumnElement[bool], devices: Iterable[str] | None = None
) -> Sequence[Unconfirmed]:
    """Device deliveries not confirmed yet (of `devices`, or all): a warning of an open target in an active
    alert, not out yet or out without its "sounding"; and a lift out without its "done" where `lift_if` holds."""
    waiting_warning = and_(
        col(Delivery.purpose) == Purpose.WARN.value,
        col(Alert.status) == AlertStatus.ACTIVE.value,
        col(Target.state) == TargetState.OPEN.value,
        col(Delivery.state).in_([DeliveryState.PENDING.value, DeliveryState.SENDING.value, *CONFIRMABLE]),
    )
    lift_unheard = and_(
        col(Delivery.purpose) == Purpose.LIFT.value, col(Delivery.state) == DeliveryState.SENT.value, lift_if
    )
    within = col(Delivery.device_id).in_(list(devices)) if devices is not None else true()
    return (
        await s.execute(
            select(
                col(Delivery.id),
                col(Delivery.alert_id),
                col(Delivery.target_id),
                col(Delivery.device_id),
                col(Delivery.state),
                col(Delivery.sent_at),
            )
            .join(Alert, col(Alert.id) == col(Delivery.alert_id))
            .join(Target, col(Target.id) == col(Delivery.target_id))
            .where(col(Delivery.channel) == ChannelKind.DEVICE.value, within, or_(waiting_warning, lift_unheard))
            .order_by(col(Delivery.alert_id), col(Delivery.id))
        )
    ).all()
