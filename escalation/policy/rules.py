"""Escalation policies as data: which channels, in what order, how long to wait; editable YAML, validated at load.

A policy has three kinds of plan (the file format is described in default_policy.yaml):
- the county's plan for each level (`levels`),
- county plans for some hazards at some levels (`hazard_plans`, e.g. 山洪 at orange sounds the sirens),
- units with a plan of their own for their whole subtree (`unit_overrides`, 一乡镇一方案), for some levels and
  optionally some hazards.
A plan is taken whole, never merged: for a target the most specific one wins, in this order:
unit + hazard > unit > hazard > level. Among units, the one nearest the target on its path wins.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from itertools import product
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    field_validator,
)
from pydantic import model_validator as model_check
from pydantic_core import ErrorDetails, PydanticCustomError

from alerting.model.domain import ChannelKind, Level, TaskKind
from alerting.model.plan import Plan, PlanSet, Step, Who
from escalation.policy import yaml_source as policy_yaml
from escalation.policy.yaml_source import KEY, Loc, Position

MAX_WAIT_S = 24 * 3600
DEVICE_CHANNELS = frozenset({ChannelKind.BROADCAST, ChannelKind.DEVICE})
_UNIT_CODE = re.compile(r"[0-9]{1,20}")


def _problem(message: str, at: str = "") -> PydanticCustomError:
    """A validation error; `at` points below the validated value (e.g. '0.who') so the line is the exact one."""
    return PydanticCustomError("policy", message, {"at": at} if at else None)


def _text(v: Any) -> Any:
    # YAML reads an unquoted 500238101 as a number; a unit code is its digits
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


def _unit_code(v: str) -> str:
    if not _UNIT_CODE.fullmatch(v):
        raise _problem(f"a unit code is digits only, like 500238101 (got {v!r})")
    return v


UnitCode = Annotated[str, BeforeValidator(_text), AfterValidator(_unit_code)]
Hazard = Annotated[str, BeforeValidator(_text), StringConstraints(strip_whitespace=True, min_length=1, max_length=32)]


def _not_the_target(who: Who) -> str:
    return f"the first step must reach the target itself (who: target), not {who.value}"


def _names(kinds: Sequence[ChannelKind]) -> str:
    return ", ".join(k.value for k in kinds)


class StepSpec(BaseModel, extra="forbid"):
    who: Who
    channels: list[ChannelKind] = Field(min_length=1)
    fallback: list[ChannelKind] = Field(default_factory=list)
    wait_s: int = Field(gt=0)
    task: TaskKind | None = None

    @field_validator("wait_s")
    @classmethod
    def _humane_wait(cls, v: int) -> int:
        if v > MAX_WAIT_S:
            raise _problem(f"a wait of {v} s ({v / 3600:.1f} h) is longer than 24 hours; is it in seconds?")
        return v

    @model_check(mode="after")
    def _task_goes_with_manual(self) -> StepSpec:
        manual = ChannelKind.MANUAL in (*self.channels, *self.fallback)
        if manual and self.task is None:
            raise _problem("a manual step says which task: 鸣锣吹哨 or 敲门入户", "task")
        if self.task is not None and not manual:
            raise _problem("a task is carried by the manual channel: add manual to channels", "channels")
        return self

    def step(self) -> Step:
        return Step(who=self.who, channels=self.channels, fallback=self.fallback, wait_s=self.wait_s, task=self.task)


class PersonStep(StepSpec):
    @field_validator("channels", "fallback")
    @classmethod
    def _people_channels(cls, v: list[ChannelKind]) -> list[ChannelKind]:
        devices = [c for c in v if c in DEVICE_CHANNELS]
        if devices:
            raise _problem(f"{_names(devices)} reach devices, not people: put them in device_steps")
        return v


class DeviceStep(StepSpec):
    """`who: target` is the device itself (send, or resend the same command); any other `who` is people
    standing in for a device that never confirmed (the village head with a 鸣锣吹哨 task)."""

    @model_check(mode="after")
    def _channels_fit_who(self) -> DeviceStep:
        if self.who is Who.TARGET:
            wrong = [c for c in self.channels if c not in DEVICE_CHANNELS]
            if wrong:
                raise _problem(
                    f"a step for the device itself uses broadcast or device, not {_names(wrong)}", "channels"
                )
            if self.fallback:
                raise _problem("a device has no fallback channel", "fallback")
        else:
            wrong = [c for c in (*self.channels, *self.fallback) if c in DEVICE_CHANNELS]
            if wrong:
                raise _problem(f"who: {self.who.value} is people; {_names(wrong)} only reach devices", "channels")
        return self


class PlanSpec(BaseModel, extra="forbid"):
    """One plan: person_steps[0] is the first wave to people, device_steps[0] the first wave to devices."""

    person_steps: list[PersonStep] = Field(min_length=1)
    device_steps: list[DeviceStep] = Field(default_factory=list)

    @field_validator("person_steps", "device_steps")
    @classmethod
    def _first_reaches_the_target(cls, v: list[StepSpec]) -> list[StepSpec]:
        if v and v[0].who is not Who.TARGET:
            raise _problem(_not_the_target(v[0].who), "0.who")
        return v

    def plan(self, level: Level) -> Plan:
        return Plan(
            level=level,
            person_steps=[s.step() for s in self.person_steps],
            device_steps=[s.step() for s in self.device_steps],
        )


LevelPolicy = PlanSpec  # the name earlier callers used


class HazardPlan(PlanSpec):
    hazards: list[Hazard] = Field(min_length=1)
    levels: list[Level] = Field(min_length=1)
    _line: int = PrivateAttr(default=0)


class UnitOverride(PlanSpec):
    unit: UnitCode
    name: str = Field(default="", max_length=100, description="for readers; not checked against the directory")
    levels: list[Level] = Field(min_length=1)
    hazards: list[Hazard] = Field(default_factory=list, description="empty: every hazard")
    _line: int = PrivateAttr(default=0)


@dataclass(frozen=True)
class Rule:
    """The plan chosen for a level, hazard and unit, and where it came from."""

    plan: Plan
    label: str  # "county default", "hazard 山洪", "override 500238101", "override 500238101 for 山洪"
    line: int = 0  # where the rule starts in its file (0: not known)
    unit: str | None = None
    unit_name: str = ""


class PolicySet(BaseModel, extra="forbid"):
    levels: dict[Level, PlanSpec]
    hazard_plans: list[HazardPlan] = Field(default_factory=list)
    unit_overrides: list[UnitOverride] = Field(default_factory=list)
    _lines: dict[Level, int] = PrivateAttr(default_factory=dict)

    def plan_for(self, level: Level, hazard: str, units: list[str]) -> PlanSet:
        """Implements alerting.plan.Planner: the snapshot an alert carries.

        Every unit with an override for this level and hazard is included, not only those under `units`:
        unit codes need not nest by prefix, and only the unit tree (which the core has) says what is below what.
        """
        overrides = {code: self.unit_rule(level, hazard, code) for code in self.override_units()}
        return PlanSet(
            default=self.county_rule(level, hazard).plan,
            overrides={code: rule.plan for code, rule in overrides.items() if rule is not None},
        )

    def county_rule(self, level: Level, hazard: str | None) -> Rule:
        for hp in self.hazard_plans:
            if hazard is not None and hazard in hp.hazards and level in hp.levels:
                return Rule(hp.plan(level), f"hazard {hazard}", hp._line)
        spec = self.levels.get(level)
        if spec is None:
            raise PolicyError(f"the policy has no steps for level {level.value}")
        return Rule(spec.plan(level), "county default", self._lines.get(level, 0))

    def unit_rule(self, level: Level, hazard: str | None, unit: str) -> Rule | None:
        """The unit's own plan, if it has one for this level (and hazard)."""
        mine = [o for o in self.unit_overrides if o.unit == unit and level in o.levels]
        for o in mine:
            if hazard is not None and hazard in o.hazards:
                return Rule(o.plan(level), f"override {unit} for {hazard}", o._line, unit, o.name)
        for o in mine:
            if not o.hazards:
                return Rule(o.plan(level), f"override {unit}", o._line, unit, o.name)
        return None

    def effective(self, level: Level, hazard: str | None, path: Sequence[str] = ()) -> Rule:
        """The rule a target follows whose unit path (county first) is `path`: what PlanSet.for_path picks."""
        for code in reversed(path):
            rule = self.unit_rule(level, hazard, code)
            if rule is not None:
                return rule
        return self.county_rule(level, hazard)

    def override_units(self) -> list[str]:
        return list(dict.fromkeys(o.unit for o in self.unit_overrides))

    def summary(self) -> str:
        def n(count: int, word: str) -> str:
            return f"{count} {word}{'' if count == 1 else 's'}"

        return ", ".join(
            (
                n(len(self.levels), "level"),
                n(len(self.hazard_plans), "hazard plan"),
                n(len(self.unit_overrides), "unit override"),
            )
        )

    def _remember_lines(self, doc: policy_yaml.Document) -> None:
        self._lines = {level: doc.position(("levels", level.value)).line for level in self.levels}
        for i, hp in enumerate(self.hazard_plans):
            hp._line = doc.position(("hazard_plans", i)).line
        for i, o in enumerate(self.unit_overrides):
            o._line = doc.position(("unit_overrides", i)).line


# ---- reading a policy file -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    source: str
    line: int
    column: int
    path: str  # the field, e.g. levels.red.person_steps.2.wait_s
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class PolicyError(ValueError):
    """A policy file that cannot be used; `problems` names the file, line, column and field of each mistake."""

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)

    @classmethod
    def of(cls, problems: Sequence[Problem]) -> PolicyError:
        return cls("\n".join(str(p) for p in problems), problems)


class _HazardKey(BaseModel):
    hazards: list[Hazard] = Field(min_length=1)
    levels: list[Level] = Field(min_length=1)


class _UnitKey(BaseModel):
    unit: UnitCode
    levels: list[Level] = Field(min_length=1)
    hazards: list[Hazard] = Field(default_factory=list)


def _rules(data: Any, section: str) -> list[tuple[int, Any]]:
    items = data.get(section) if isinstance(data, dict) else None
    return list(enumerate(items)) if isinstance(items, list) else []


def _cross_checks(data: Any) -> list[tuple[Loc, str]]:
    """What no single rule can see. Runs on the raw data, so it reports even when other parts are broken."""
    found: list[tuple[Loc, str]] = []
    levels = data.get("levels") if isinstance(data, dict) else None
    if isinstance(levels, dict):
        missing = [lv.value for lv in Level if lv.value not in {str(k) for k in levels}]
        if missing:
            found.append((("levels",), f"no plan for {', '.join(missing)}: every level needs the county's plan"))

    found += _first_steps(data)

    hazard_seen: dict[tuple[Any, ...], int] = {}
    for i, raw in _rules(data, "hazard_plans"):
        try:
            hk = _HazardKey.model_validate(raw)
        except ValidationError:
            continue  # its own errors are reported by the full validation
        clashes = _claim(hazard_seen, product(hk.levels, hk.hazards), "hazard_plans", i)
        if clashes:
            found.append((("hazard_plans", i, "hazards"), f"repeats {clashes}"))

    unit_seen: dict[tuple[Any, ...], int] = {}
    for i, raw in _rules(data, "unit_overrides"):
        try:
            uk = _UnitKey.model_validate(raw)
        except ValidationError:
            continue
        keys = ((uk.unit, lv, hz) for lv, hz in product(uk.levels, uk.hazards or ["*"]))  # "*": every hazard
        clashes = _claim(unit_seen, keys, "unit_overrides", i)
        if clashes:
            found.append((("unit_overrides", i, "unit"), f"repeats {clashes} for {uk.unit}"))
    return found


def _first_steps(data: Any) -> list[tuple[Loc, str]]:
    """The first step of each plan, checked even where later steps are broken (validation then stops short)."""
    plans: list[tuple[Loc, Any]] = []
    if isinstance(data, dict) and isinstance(data.get("levels"), dict):
        plans += [(("levels", str(k)), v) for k, v in data["levels"].items()]
    plans += [(("hazard_plans", i), v) for i, v in _rules(data, "hazard_plans")]
    plans += [(("unit_overrides", i), v) for i, v in _rules(data, "unit_overrides")]
    found: list[tuple[Loc, str]] = []
    for loc, plan in plans:
        for steps in ("person_steps", "device_steps"):
            first = plan.get(steps) if isinstance(plan, dict) else None
            who = first[0].get("who") if isinstance(first, list) and first and isinstance(first[0], dict) else None
            if who in set(Who) - {Who.TARGET}:
                found.append(((*loc, steps, 0, "who"), _not_the_target(Who(who))))
    return found


def _claim(seen: dict[tuple[Any, ...], int], keys: Iterable[tuple[Any, ...]], section: str, index: int) -> str:
    """Record which rule covers each key; say which earlier rules this one repeats, and for what."""
    clashes: dict[int, list[str]] = {}
    for key in keys:
        first = seen.setdefault(key, index)
        if first != index:
            clashes.setdefault(first, []).append("/".join("every hazard" if k == "*" else str(k) for k in key[-2:]))
    return "; ".join(f"{section}.{i} at {', '.join(where)}" for i, where in clashes.items())


def _error_loc(e: ErrorDetails) -> Loc:
    at = (e.get("ctx") or {}).get("at")
    below: Loc = tuple(int(p) if p.isdigit() else p for p in str(at).split(".")) if at else ()
    return (*e["loc"], *below)


def _error_message(e: ErrorDetails) -> str:
    if e["type"] == "extra_forbidden":
        if e["loc"][-1] == "devices_only_for_hazards":
            return "no longer used: give the hazards their own plan under hazard_plans (see default_policy.yaml)"
        return "unknown field (a typo?)"
    if e["type"] == "enum":
        loc = e["loc"]
        level_key = len(loc) == 3 and loc[0] == "levels" and loc[2] == KEY  # levels: {purple: ...}
        level_item = len(loc) >= 2 and loc[-2] == "levels"  # levels: [purple]
        kind = "level" if level_key or level_item else "value"
        return f"unknown {kind} {e['input']!r}: {e['msg']}"
    if e["type"] in ("dict_type", "model_type") and not e["loc"]:
        return "the policy is a mapping with levels, hazard_plans and unit_overrides"
    return e["msg"]


def _path(loc: Loc) -> str:
    return ".".join(str(p) for p in loc if p != KEY)


def parse_policy(text: str, source: str) -> PolicySet:
    """Validate a whole file and report every mistake at once, each with its line, column and field."""
    try:
        doc = policy_yaml.load(text)
    except policy_yaml.YamlSyntaxError as exc:
        at = exc.position
        raise PolicyError.of([Problem(source, at.line, at.column, "", f"not valid YAML: {exc.problem}")]) from exc

    found: list[tuple[Loc, Position | None, str]] = [(loc, pos, msg) for loc, pos, msg in doc.duplicate_keys]
    policy: PolicySet | None = None
    if doc.data is None:
        found.append(((), None, "the file is empty"))
    else:
        try:
            policy = PolicySet.model_validate(doc.data)
        except ValidationError as exc:
            found += [(_error_loc(e), None, _error_message(e)) for e in exc.errors()]
    found += [(loc, None, msg) for loc, msg in _cross_checks(doc.data)]
    if found:
        problems = []
        for loc, pos, msg in found:
            at = pos or doc.position(loc)
            problems.append(Problem(source, at.line, at.column, _path(loc), msg))
        # the same mistake can be seen by validation and by the checks on the raw data
        problems = sorted(set(problems), key=lambda p: (p.line, p.column, p.path))
        raise PolicyError.of(problems)
    assert policy is not None
    policy._remember_lines(doc)
    return policy


def default_policy() -> PolicySet:
    text = resources.files("escalation.policy").joinpath("default_policy.yaml").read_text(encoding="utf-8")
    return parse_policy(text, "default_policy.yaml")


def load_policy(path: Path | None) -> PolicySet:
    """Blocking (reads a file): call at start-up or from a thread."""
    if path is None:
        return default_policy()
    return parse_policy(path.read_text(encoding="utf-8"), str(path))
