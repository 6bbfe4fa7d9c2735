"""A schema-valid CAP 1.2 message as plain values, each remembering where it stood (for refusals)."""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.etree.ElementTree import Element

from alerting.cap.paths import element_paths
from alerting.cap.schema import CAP12

NS = f"{{{CAP12}}}"


@dataclass(frozen=True)
class Located:
    """One element's text and its path."""

    text: str
    path: str


@dataclass(frozen=True)
class Pair:
    """A valueName/value element: parameter, eventCode, geocode."""

    name: str
    value: str
    path: str


@dataclass(frozen=True)
class Area:
    desc: str
    polygons: list[Located]
    circles: list[Located]
    geocodes: list[Pair]
    path: str


@dataclass(frozen=True)
class Info:
    language: str
    categories: list[str]
    event: Located
    urgency: str
    severity: Located
    certainty: str
    headline: Located | None
    description: Located | None
    instruction: Located | None
    sender_name: str | None
    expires: str | None
    parameters: list[Pair]
    areas: list[Area]
    path: str


@dataclass(frozen=True)
class Reference:
    sender: str
    identifier: str
    sent: str

    @property
    def text(self) -> str:
        return f"{self.sender},{self.identifier},{self.sent}"


@dataclass(frozen=True)
class Message:
    identifier: str
    sender: str
    sent: str
    status: str
    msg_type: str
    scope: str
    restriction: str | None
    addresses: str | None
    note: str | None
    references: Located | None
    infos: list[Info] = field(default_factory=list)
    version: str = "1.2"  # what it came in; 1.1 was upgraded

    @property
    def exercise(self) -> bool:
        return self.status in ("Exercise", "Test")


def read_message(root: Element, version: str = "1.2") -> Message:
    """The message under a schema-valid CAP 1.2 root."""
    paths = element_paths(root)

    def text(parent: Element, name: str) -> str | None:
        found = parent.find(NS + name)
        return None if found is None else (found.text or "").strip()

    def located(parent: Element, name: str) -> Located | None:
        found = parent.find(NS + name)
        return None if found is None else Located((found.text or "").strip(), paths[id(found)])

    def pairs(parent: Element, name: str) -> list[Pair]:
        return [
            Pair(text(p, "valueName") or "", text(p, "value") or "", paths[id(p)]) for p in parent.findall(NS + name)
        ]

    def area(a: Element) -> Area:
        return Area(
            desc=text(a, "areaDesc") or "",
            polygons=[Located((p.text or "").strip(), paths[id(p)]) for p in a.findall(NS + "polygon")],
            circles=[Located((c.text or "").strip(), paths[id(c)]) for c in a.findall(NS + "circle")],
            geocodes=pairs(a, "geocode"),
            path=paths[id(a)],
        )

    def info(i: Element) -> Info:
        event, severity = located(i, "event"), located(i, "severity")
        assert event is not None and severity is not None  # the schema requires both
        return Info(
            language=text(i, "language") or "en-US",
            categories=[(c.text or "").strip() for c in i.findall(NS + "category")],
            event=event,
            urgency=text(i, "urgency") or "",
            severity=severity,
            certainty=text(i, "certainty") or "",
            headline=located(i, "headline"),
            description=located(i, "description"),
            instruction=located(i, "instruction"),
            sender_name=text(i, "senderName"),
            expires=text(i, "expires"),
            parameters=pairs(i, "parameter"),
            areas=[area(a) for a in i.findall(NS + "area")],
            path=paths[id(i)],
        )

    return Message(
        identifier=text(root, "identifier") or "",
        sender=text(root, "sender") or "",
        sent=text(root, "sent") or "",
        status=text(root, "status") or "",
        msg_type=text(root, "msgType") or "",
        scope=text(root, "scope") or "",
        restriction=text(root, "restriction"),
        addresses=text(root, "addresses"),
        note=text(root, "note"),
        references=located(root, "references"),
        infos=[info(i) for i in root.findall(NS + "info")],
        version=version,
    )
