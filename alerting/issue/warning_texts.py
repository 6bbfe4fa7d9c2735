"""The warning texts offered per hazard and level (warning_texts.yaml). A starting point; the officer edits it."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib.resources import files

import yaml
from pydantic import BaseModel, Field, model_validator

from alerting.model.domain import Level

# More than three names make a title nobody reads; the rest are counted instead.
AREA_NAMES = 3


class LevelText(BaseModel, extra="forbid"):
    text: str = Field(min_length=1, max_length=2000)
    instructions: str = Field(default="", max_length=1000)


class Catalogue(BaseModel, extra="forbid"):
    title: str = Field(min_length=1)
    hazards: dict[str, dict[Level, LevelText]] = Field(min_length=1)

    @model_validator(mode="after")
    def _every_level(self) -> Catalogue:
        for hazard, levels in self.hazards.items():
            missing = [lv.value for lv in Level if lv not in levels]
            if missing:
                raise ValueError(f"hazard {hazard} has no text for level(s) {', '.join(missing)}")
        return self


class WarningText(BaseModel):
    hazard: str
    level: Level
    title: str
    text: str
    instructions: str


@cache
def catalogue() -> Catalogue:
    """Read once; the file ships with the package, so a broken one fails the first test that looks."""
    raw = (files("alerting.issue") / "warning_texts.yaml").read_text(encoding="utf-8")
    return Catalogue.model_validate(yaml.safe_load(raw))


def hazards() -> list[str]:
    return list(catalogue().hazards)


def area_of(names: Sequence[str]) -> str:
    """'凤凰镇、宁厂镇' or '凤凰镇、宁厂镇、红池坝镇等5个单位'; empty when nothing is chosen yet."""
    shown = "、".join(names[:AREA_NAMES])
    return shown + (f"等{len(names)}个单位" if len(names) > AREA_NAMES else "")


def warning_text(hazard: str, level: Level, area_names: Sequence[str] = ()) -> WarningText | None:
    """The offered text for this hazard and level with the area filled in; None for a hazard without texts."""
    cat = catalogue()
    entry = cat.hazards.get(hazard, {}).get(level)
    if entry is None:
        return None
    values = {"area": area_of(area_names), "hazard": hazard, "level": level.label}
    return WarningText(
        hazard=hazard,
        level=level,
        title=cat.title.format(**values),
        text=entry.text.format(**values),
        instructions=entry.instructions.format(**values),
    )


def all_texts() -> list[WarningText]:
    """Every template, with the area left as a placeholder for whoever fills it in."""
    cat = catalogue()
    out: list[WarningText] = []
    for hazard, levels in cat.hazards.items():
        for level, entry in levels.items():
            values = {"area": "{area}", "hazard": hazard, "level": level.label}
            out.append(
                WarningText(
                    hazard=hazard,
                    level=level,
                    title=cat.title.format(**values),
                    text=entry.text.format(**values),
                    instructions=entry.instructions.format(**values),
                )
            )
    return out
