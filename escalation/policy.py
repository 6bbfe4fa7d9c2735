"""Level policies: which channels, in what order, how long to wait. Editable YAML, validated at load."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from alerting.domain import Level
from alerting.plan import Plan, PlanSet, Step


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file and each bad field."""


class LevelPolicy(BaseModel, extra="forbid"):
    person_steps: list[Step] = Field(min_length=1)
    device_steps: list[Step] = Field(default_factory=list)
    # when set, devices join the first wave only for these hazards (orange: sirens if the hazard says so)
    devices_only_for_hazards: list[str] | None = None


class PolicySet(BaseModel, extra="forbid"):
    levels: dict[Level, LevelPolicy]

    def plan_for(self, level: Level, hazard: str, units: list[str]) -> PlanSet:
        """Implements alerting.plan.Planner: the snapshot an alert carries."""
        return PlanSet(default=self._plan(level, hazard))

    def _plan(self, level: Level, hazard: str) -> Plan:
        policy = self.levels.get(level)
        if policy is None:
            raise PolicyError(f"the policy has no steps for level {level.value}")
        devices = policy.device_steps
        if policy.devices_only_for_hazards is not None and hazard not in policy.devices_only_for_hazards:
            devices = []
        return Plan(level=level, person_steps=policy.person_steps, device_steps=devices)


def parse_policy(text: str, source: str) -> PolicySet:
    try:
        raw: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not valid YAML: {exc}") from exc
    try:
        policies = PolicySet.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise PolicyError(f"{source}: {problems}") from exc
    missing = [lv.value for lv in Level if lv not in policies.levels]
    if missing:
        raise PolicyError(f"{source}: levels without a policy: {', '.join(missing)}")
    for level, lp in policies.levels.items():
        try:
            Plan(level=level, person_steps=lp.person_steps, device_steps=lp.device_steps)
        except ValidationError as exc:
            raise PolicyError(f"{source}: levels.{level.value}: {exc.errors()[0]['msg']}") from exc
    return policies


def default_policy() -> PolicySet:
    text = resources.files("escalation").joinpath("default_policy.yaml").read_text(encoding="utf-8")
    return parse_policy(text, "default_policy.yaml")


def load_policy(path: Path | None) -> PolicySet:
    """Blocking (reads a file): call at start-up or from a thread."""
    if path is None:
        return default_policy()
    return parse_policy(path.read_text(encoding="utf-8"), str(path))
