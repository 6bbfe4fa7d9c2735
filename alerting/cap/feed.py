"""The public Atom feed (RFC 4287) of active real warnings, each linking its CAP 1.2 message. Drills never appear."""

from __future__ import annotations

from datetime import datetime
from xml.etree.ElementTree import Element, SubElement, tostring

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting.model.clock import utc
from alerting.model.domain import AlertStatus, Level
from alerting.store.tables import Alert

ATOM = "http://www.w3.org/2005/Atom"
FEED_LIMIT = 200


async def public_alerts(s: AsyncSession) -> list[Alert]:
    """Active alerts that are real warnings, newest first."""
    q = (
        select(Alert)
        .where(col(Alert.status) == AlertStatus.ACTIVE.value, col(Alert.exercise).is_(False))
        .order_by(col(Alert.id).desc())
        .limit(FEED_LIMIT)
    )
    return list((await s.execute(q)).scalars())


def atom_feed(alerts: list[Alert], *, base_url: str, title: str, now: datetime) -> bytes:
    base = base_url.rstrip("/")
    # unqualified names under an xmlns attribute: ElementTree's default_namespace refuses plain attribute names
    feed = Element("feed", xmlns=ATOM)

    def add(parent: Element, name: str, text: str | None = None, **attrs: str) -> Element:
        e = SubElement(parent, name, attrs)
        if text is not None:
            e.text = text
        return e

    add(feed, "id", f"{base}/cap/feed.atom")
    add(feed, "title", title)
    add(feed, "updated", utc(max((a.created_at for a in alerts), default=now)).isoformat())
    add(feed, "link", rel="self", href=f"{base}/cap/feed.atom", type="application/atom+xml")
    author = add(feed, "author")
    add(author, "name", title)
    for a in alerts:
        entry = add(feed, "entry")
        add(entry, "id", f"{base}/cap/alerts/{a.id}")
        add(entry, "title", f"【{Level(a.level).label}预警】{a.title}")
        add(entry, "updated", utc(a.created_at).isoformat())
        add(entry, "summary", a.text)
        add(entry, "link", rel="alternate", type="application/cap+xml", href=f"{base}/cap/alerts/{a.id}")
    return bytes(tostring(feed, encoding="utf-8", xml_declaration=True))
