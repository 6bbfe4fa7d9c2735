"""The escalation plan an alert carries: a snapshot taken when it goes out.

Policies (escalation/) produce plans; the core only executes them, so editing a policy
mid-incident changes nothing already running.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel, Field, model_validator

from alerting.model.domain import PERSON_CHANNELS, ChannelKind, Level, TaskKind


class Who(StrEnum):
    TARGET = "target"  # the responsible person (or device) itself
    BACKUP = "backup"  # backups of the same unit
    PARENT = "parent"  # primary responsible person of the parent unit
    TOWNSHIP_DUTY = "township_duty"  # who is on duty at the township now
    COUNTY_DUTY = "county_duty"  # the county duty room
    VILLAGE = "village"  # the village's responsible person (for a device that failed)

    @property
    def label(self) -> str:
        return {
            "target": "本人",
            "backup": "备岗人员",
            "parent": "上级责任人",
            "township_duty": "乡镇值班员",
            "county_duty": "县值班室",
            "village": "村（社区）负责人",
        }[self.value]


class Step(BaseModel):
    who: Who
    channels: list[ChannelKind] = Field(min_length=1)
    # channels to use only when the contact can be reached on none of `channels` (blue: WeCom, else SMS)
    fallback: list[ChannelKind] = Field(default_factory=list)
    wait_s: int = Field(gt=0, description="how long to wait for an answer before the next step")
    task: TaskKind | None = None  # for manual steps: what the person must do


class Plan(BaseModel):
    level: Level
    person_steps: list[Step] = Field(min_length=1)
    device_steps: list[Step] = Field(default_factory=list)

    @model_validator(mode="after")
    def _first_steps_reach_the_target(self) -> Plan:
        if self.person_steps[0].who is not Who.TARGET:
            raise ValueError("the first step must reach the target itself")
        if self.device_steps and self.device_steps[0].who is not Who.TARGET:
            raise ValueError("the first device step must reach the device itself")
        return self

    @property
    def window_s(self) -> int:
        return self.person_steps[0].wait_s

    @property
    def first_wave(self) -> list[ChannelKind]:
        kinds = list(self.person_steps[0].channels)
        if self.device_steps:
            kinds += [k for k in self.device_steps[0].channels if k not in kinds]
        return kinds

    def person_channels(self, step: int) -> list[ChannelKind]:
        return [c for c in self.person_steps[step].channels if c in PERSON_CHANNELS]


class PlanSet(BaseModel):
    """The plans one alert carries: the county's, and those of units with their own (一乡镇一方案)."""

    default: Plan
    overrides: dict[str, Plan] = Field(default_factory=dict, description="unit code -> plan for its subtree")

    @classmethod
    def stored(cls, data: dict[str, Any]) -> PlanSet:
        """Read what an alert stored; the first alerts stored a single plan."""
        return cls.model_validate(data) if "default" in data else cls(default=Plan.model_validate(data))

    def for_path(self, path: str) -> Plan:
        """The plan of the most specific unit on the path '/county/township/…/' that has one."""
        for code in reversed([c for c in path.split("/") if c]):
            if code in self.overrides:
                return self.overrides[code]
        return self.default

    def all(self) -> list[Plan]:
        return [self.default, *self.overrides.values()]


class Planner(Protocol):
    """Chooses the plans for a new alert. escalation/ implements it from the county's policies."""

    def plan_for(self, level: Level, hazard: str, units: list[str]) -> PlanSet: ...
