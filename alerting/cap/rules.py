"""What CAP 1.2 requires and its schema cannot say (CAP-v1.2-os, section 3.2). Each refusal names the element."""

from __future__ import annotations

import re

from alerting.cap.errors import CapRefused
from alerting.cap.message import Located, Message, Reference

# identifier and sender: "MUST NOT include spaces, commas or restricted characters (< and &)"
_FORBIDDEN = re.compile(r"[\s,<&]")
_SENT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[-+]\d\d:\d\d$")
_NUMBER = r"[-+]?\d+(?:\.\d+)?"
_PAIR = re.compile(rf"^({_NUMBER}),({_NUMBER})$")


def check(message: Message) -> None:
    """Refuse the first thing found wrong."""
    for name, value in (("identifier", message.identifier), ("sender", message.sender)):
        bad = _FORBIDDEN.search(value)
        if bad is not None:
            what = "a space" if bad.group().isspace() else repr(bad.group())
            raise CapRefused(name, f"{name} {value!r} contains {what}; CAP forbids spaces, commas, < and &")
    if message.scope == "Restricted" and not message.restriction:
        raise CapRefused("restriction", "scope is Restricted, so the message must say its restriction")
    if message.scope == "Private" and not message.addresses:
        raise CapRefused("addresses", "scope is Private, so the message must list its addresses")
    if message.msg_type in ("Update", "Cancel"):
        if message.references is None or not message.references.text:
            raise CapRefused("references", f"an {message.msg_type} must reference the message(s) it changes")
        references(message.references)
    elif message.references is not None:
        references(message.references)
    for info in message.infos:
        for area in info.areas:
            for polygon in area.polygons:
                _polygon(polygon)
            for circle in area.circles:
                _circle(circle)


def references(refs: Located) -> list[Reference]:
    """The entries of `references`: whitespace-separated `sender,identifier,sent`."""
    out: list[Reference] = []
    for n, entry in enumerate(refs.text.split()):
        parts = entry.split(",")
        if len(parts) != 3 or not all(parts):
            raise CapRefused(
                refs.path, f"entry {n + 1} ({entry!r}) is not sender,identifier,sent (three parts, comma-separated)"
            )
        sender, identifier, sent = parts
        if not _SENT.match(sent):
            raise CapRefused(refs.path, f"entry {n + 1}: {sent!r} is not a CAP time (YYYY-MM-DDThh:mm:ss±hh:mm)")
        out.append(Reference(sender, identifier, sent))
    return out


def _coordinates(where: str, text: str) -> tuple[float, float]:
    found = _PAIR.match(text)
    if found is None:
        raise CapRefused(where, f"{text!r} is not a latitude,longitude pair")
    lat, lon = float(found.group(1)), float(found.group(2))
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise CapRefused(where, f"{text!r} is not a WGS 84 point (latitude -90…90, longitude -180…180)")
    return lat, lon


def _polygon(polygon: Located) -> None:
    pairs = polygon.text.split()
    points = [_coordinates(polygon.path, p) for p in pairs]
    if len(points) < 4:
        raise CapRefused(
            polygon.path, f"a polygon needs at least 4 points, the first repeated last; it has {len(points)}"
        )
    if points[0] != points[-1]:
        raise CapRefused(polygon.path, "the polygon is not closed: its last point must repeat its first")


def _circle(circle: Located) -> None:
    parts = circle.text.split()
    if not parts:
        raise CapRefused(circle.path, "the circle is empty; it needs lat,lon and a radius in km")
    _coordinates(circle.path, parts[0])
    if len(parts) != 2:
        raise CapRefused(circle.path, "a circle is its centre and its radius (lat,lon radius-in-km), nothing else")
    if not re.fullmatch(r"\d+(?:\.\d+)?", parts[1]):
        raise CapRefused(circle.path, f"the radius {parts[1]!r} is not a number of kilometres")
