"""From a CAP message to the engine's own alert request: what is mapped how, and configurable where it may differ.

- level: an info `parameter` named as in `level_parameters` (default `level`, `预警级别`) with red/orange/yellow/
  blue or 红色/橙色/黄色/蓝色 wins; otherwise `severity` through `severity_levels` (default Extreme→red,
  Severe→orange, Moderate→yellow, Minor→blue). Severity Unknown with no level parameter is refused.
- hazard: `event` through `hazard_aliases` first; else the longest known hazard (the warning texts' hazards:
  暴雨, 山洪, …) the event names (暴雨红色预警 → 暴雨); else the event itself (at most 32 characters).
- texts: headline → title (else event and level: 暴雨红色预警), description → text (else the headline),
  instruction → instructions. Too long is refused, never cut.
- status Exercise and Test → a drill (演练), never a real warning; System and Draft are refused.
- areas: `geocode`s named as in `geocode_names` whose values are administrative division codes (GB/T 2260 six
  digits, the nine-digit township and twelve-digit statistical codes, this directory's fourteen-digit grids) →
  the directory's units (resolved in importer). Polygons and circles: the units carry no coordinates, so an area
  given only by them is refused.
Of several `info` blocks the first in Chinese (language zh*) is taken, else the first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from alerting.cap.errors import CapRefused
from alerting.cap.message import Info, Message, Pair
from alerting.model.domain import Level
from alerting.model.plain_text import bad_character

_LEVEL_WORDS = {
    **{lv.value: lv for lv in Level},
    **{lv.label: lv for lv in Level},
    **{lv.label.removesuffix("色"): lv for lv in Level},
}
_DIGITS = re.compile(r"^\d{6}(\d{3})?(\d{3})?(\d{2})?$")  # 6, 9, 12 or 14 digits
# the engine's own limits (alerting.issue.alerts.AlertRequest)
TITLE_MAX, TEXT_MAX, INSTRUCTIONS_MAX, HAZARD_MAX = 200, 2000, 1000, 32


class CapMapping(BaseModel, extra="forbid"):
    """How messages map; the county may change each (settings `cap_mapping`)."""

    severity_levels: dict[str, Level] = Field(
        default_factory=lambda: {
            "Extreme": Level.RED,
            "Severe": Level.ORANGE,
            "Moderate": Level.YELLOW,
            "Minor": Level.BLUE,
        }
    )
    level_parameters: list[str] = Field(default_factory=lambda: ["level", "预警级别"])
    geocode_names: list[str] = Field(
        default_factory=lambda: ["GB/T 2260", "GB2260", "GBT2260", "行政区划代码", "ADCODE", "areaCode"]
    )
    hazard_aliases: dict[str, str] = Field(default_factory=dict)
    known_hazards: list[str] = Field(default_factory=list, description="empty: the warning texts' hazards")


@dataclass(frozen=True)
class Mapped:
    """What a message asks for, before its area is looked up in the directory."""

    info: Info | None
    level: Level | None = None
    level_from: str = ""  # "parameter" or "severity"
    hazard: str = ""
    title: str = ""
    text: str = ""
    instructions: str = ""
    exercise: bool = False
    codes: list[Pair] = field(default_factory=list)  # the geocodes naming administrative divisions
    ignored: list[str] = field(default_factory=list)  # what the message carries and this mapping leaves aside


def chosen_info(message: Message) -> Info | None:
    for info in message.infos:
        if info.language.lower().startswith("zh"):
            return info
    return message.infos[0] if message.infos else None


def map_message(message: Message, mapping: CapMapping, hazards: list[str]) -> Mapped:
    if message.status in ("System", "Draft"):
        raise CapRefused("status", f"a {message.status} message is not a warning to anyone; it is not taken")
    if message.msg_type in ("Ack", "Error"):
        raise CapRefused("msgType", f"an {message.msg_type} message answers another system; nothing is issued")
    exercise = message.exercise
    info = chosen_info(message)
    if message.msg_type == "Cancel":
        return Mapped(info, exercise=exercise)
    if info is None:
        raise CapRefused("info", f"an {message.msg_type} needs an info block saying what to warn of")
    ignored = [f"{i.path} ({i.language})" for i in message.infos if i is not info]
    level, level_from = _level(info, mapping)
    hazard = _hazard(info, mapping, mapping.known_hazards or hazards)
    # a headline is one line wherever it is shown; a feed pretty-printed over several lines means one
    title = (
        " ".join(info.headline.text.split()) if info.headline and info.headline.text else f"{hazard}{level.label}预警"
    )
    text = info.description.text if info.description and info.description.text else title
    instructions = info.instruction.text if info.instruction else ""
    for located, value, limit in (
        (info.headline, title, TITLE_MAX),
        (info.description, text, TEXT_MAX),
        (info.instruction, instructions, INSTRUCTIONS_MAX),
    ):
        if located is not None and len(value) > limit:
            raise CapRefused(located.path, f"{len(value)} characters; at most {limit} are taken (nothing is cut)")
        if located is not None and (bad := bad_character(value, multiline=located is not info.headline)) is not None:
            raise CapRefused(located.path, f"the text holds {bad}, which no warning may carry")
    if len(hazard) > HAZARD_MAX:
        raise CapRefused(info.event.path, f"the hazard {hazard!r} is longer than {HAZARD_MAX} characters")
    codes, more = _codes(info, mapping)
    return Mapped(info, level, level_from, hazard, title, text, instructions, exercise, codes, ignored + more)


def _level(info: Info, mapping: CapMapping) -> tuple[Level, str]:
    names = {n.lower() for n in mapping.level_parameters}
    for p in info.parameters:
        if p.name.lower() in names:
            word = p.value.strip().lower().removesuffix("预警")
            if word not in _LEVEL_WORDS:
                raise CapRefused(
                    p.path, f"level {p.value!r} is none of red, orange, yellow, blue (红色/橙色/黄色/蓝色)"
                )
            return _LEVEL_WORDS[word], "parameter"
    level = mapping.severity_levels.get(info.severity.text)
    if level is None:
        raise CapRefused(
            info.severity.path,
            f"severity {info.severity.text} maps to no level, and no level parameter says one "
            f"(mapped: {', '.join(f'{k}→{v.value}' for k, v in mapping.severity_levels.items())})",
        )
    return level, "severity"


def _hazard(info: Info, mapping: CapMapping, hazards: list[str]) -> str:
    event = info.event.text
    if event in mapping.hazard_aliases:
        return mapping.hazard_aliases[event]
    named = [h for h in hazards if h in event]
    if named:
        return max(named, key=len)
    if not event or len(event) > HAZARD_MAX:
        raise CapRefused(info.event.path, f"the event {event!r} names no known hazard and is no hazard name itself")
    return event


def _codes(info: Info, mapping: CapMapping) -> tuple[list[Pair], list[str]]:
    names = {n.lower() for n in mapping.geocode_names}
    codes: list[Pair] = []
    ignored: list[str] = []
    for area in info.areas:
        usable = [g for g in area.geocodes if g.name.lower() in names and _DIGITS.match(g.value.strip())]
        ignored += [f"{g.path} ({g.name}={g.value})" for g in area.geocodes if g not in usable]
        shapes = area.polygons + area.circles
        if not usable and shapes:
            raise CapRefused(
                shapes[0].path,
                "this area is given only as a polygon or circle; the directory's units carry no coordinates, so it "
                "cannot be matched to units: send the area's administrative division codes as geocodes",
            )
        ignored += [f"{s.path} (shape; geocodes used)" for s in shapes]
        codes += usable
    if not codes:
        where = info.areas[0].path if info.areas else info.path
        raise CapRefused(where, "no area given by an administrative division code (geocode), so nobody can be warned")
    return codes, ignored
