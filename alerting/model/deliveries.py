"""Which deliveries went to their provider: the one line between "not sent" and "sent" that every writer shares.

A delivery counts as handed over from the moment its hand-over commits (deliver/handover.py): whatever its
outcome, the provider may have it, so a lift notice follows it. Before that it is not sent, and a cancel or an
answer stops it.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, or_
from sqlmodel import col

from alerting.model.domain import DeliveryState
from alerting.store.tables import Delivery

REACHED = [DeliveryState.SENT.value, DeliveryState.DELIVERED.value]


def handed_over() -> ColumnElement[bool]:
    """Sent or delivered, or in flight at the provider right now."""
    return or_(
        col(Delivery.state).in_(REACHED),
        and_(col(Delivery.state) == DeliveryState.SENDING.value, col(Delivery.handed_at).is_not(None)),
    )


def not_handed_over() -> ColumnElement[bool]:
    """Queued, or claimed by a dispatcher that has not handed it to the provider yet."""
    return or_(
        col(Delivery.state) == DeliveryState.PENDING.value,
        and_(col(Delivery.state) == DeliveryState.SENDING.value, col(Delivery.handed_at).is_(None)),
    )
