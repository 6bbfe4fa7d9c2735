"""Escalation policies as data: the county's plans, hazard plans, units with their own plan, and clear mistakes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlmodel import col

from alerting.issue.alerts import AlertRequest, AlertService
from alerting.model.clock import ManualClock, utc
from alerting.model.domain import ChannelKind, Level, TaskKind
from alerting.model.plan import Who
from alerting.store.db import Database
from alerting.store.tables import Deadline, Delivery, Target
from escalation.engine import EscalationEngine
from escalation.policy.rules import PolicyError, PolicySet, default_policy, load_policy, parse_policy
from tests.conftest import SmallCounty

V, S, W, B, D = ChannelKind.VOICE, ChannelKind.SMS, ChannelKind.WECOM, ChannelKind.BROADCAST, ChannelKind.DEVICE

COUNTY_LEVELS = """\
levels:
  red:
    person_steps:
      - {who: target, channels: [voice, sms, wecom], wait_s: 300}
      - {who: target, channels: [voice], wait_s: 300}
      - {who: parent, channels: [voice, sms, wecom], wait_s: 300}
    device_steps:
      - {who: target, channels: [broadcast, device], wait_s: 60}
      - {who: village, channels: [manual], task: 鸣锣吹哨, wait_s: 300}
  orange: {person_steps: [{who: target, channels: [voice, sms, wecom], wait_s: 600}]}
  yellow: {person_steps: [{who: target, channels: [sms, wecom], wait_s: 1800}]}
  blue: {person_steps: [{who: target, channels: [wecom], fallback: [sms], wait_s: 3600}]}
"""

# 西坪村 (500238101002) calls its people by SMS first and waits ten minutes before going to the parent unit;
# it has no sirens of its own in red warnings (someone walks the village instead).
VILLAGE_OVERRIDE = (
    COUNTY_LEVELS
    + """\
unit_overrides:
  - unit: "500238101002"
    name: 西坪村
    levels: [red]
    person_steps:
      - {who: target, channels: [sms], wait_s: 600}
      - {who: parent, channels: [voice], wait_s: 600}
"""
)


def rainstorm(level: Level, units: list[str], hazard: str = "暴雨") -> AlertRequest:
    return AlertRequest(
        level=level, hazard=hazard, title="凤凰镇强降雨", text="预计未来3小时降雨超过100毫米。", units=units
    )


# ---- the county's default file -------------------------------------------------------------------------------


def test_the_default_file_gives_the_plans_of_the_design() -> None:
    policy = default_policy()
    red = policy.plan_for(Level.RED, "暴雨", ["500238101"])
    assert red.overrides == {}
    # red: broadcast + sirens + voice + SMS + WeCom at once, five minutes, then up to the county duty room
    assert red.default.first_wave == [V, S, W, B, D]
    assert red.default.window_s == 300
    assert [s.who for s in red.default.person_steps] == [
        Who.TARGET,
        Who.TARGET,
        Who.BACKUP,
        Who.PARENT,
        Who.TOWNSHIP_DUTY,
        Who.COUNTY_DUTY,
    ]
    assert red.default.person_steps[1].channels == [V]  # the redial
    assert [s.wait_s for s in red.default.device_steps] == [60, 60, 300]
    assert red.default.device_steps[2].task is TaskKind.GONG
    # orange: people only, unless the hazard strikes on the ground; then the sirens too
    assert policy.plan_for(Level.ORANGE, "暴雨", []).default.first_wave == [V, S, W]
    for hazard in ("山洪", "地质灾害", "泥石流", "滑坡"):
        orange = policy.plan_for(Level.ORANGE, hazard, []).default
        assert orange.first_wave == [V, S, W, D]
        assert orange.person_steps == policy.plan_for(Level.ORANGE, "暴雨", []).default.person_steps
        assert orange.window_s == 600
    yellow = policy.plan_for(Level.YELLOW, "高温", []).default
    assert (yellow.first_wave, yellow.window_s, yellow.person_steps[1].channels) == ([S, W], 1800, [V])
    blue = policy.plan_for(Level.BLUE, "高温", []).default
    assert (blue.first_wave, blue.person_steps[0].fallback, blue.window_s) == ([W], [S], 3600)
    assert policy.summary() == "4 levels, 1 hazard plan, 0 unit overrides"


def test_load_policy_without_a_file_is_the_default(tmp_path: Path) -> None:
    assert load_policy(None) == default_policy()
    copy = tmp_path / "policy.yaml"
    copy.write_text(Path("escalation/policy/default_policy.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    assert load_policy(copy).plan_for(Level.RED, "暴雨", []) == default_policy().plan_for(Level.RED, "暴雨", [])


# ---- hazard plans and unit overrides ---------------------------------------------------------------------------

LAYERS = (
    COUNTY_LEVELS
    + """\
hazard_plans:
  - hazards: [山洪]
    levels: [red, orange]
    person_steps:
      - {who: target, channels: [voice], wait_s: 120}
unit_overrides:
  - unit: 500238101
    levels: [red]
    person_steps:
      - {who: target, channels: [wecom], wait_s: 900}
  - unit: 500238101
    levels: [red]
    hazards: [山洪]
    person_steps:
      - {who: target, channels: [sms], wait_s: 60}
  - unit: "500238101002"
    levels: [red, yellow]
    person_steps:
      - {who: target, channels: [email], wait_s: 240}
"""
)


def test_a_hazard_plan_replaces_the_county_plan_for_its_hazard_and_levels_only() -> None:
    policy = parse_policy(LAYERS, "policy.yaml")
    assert policy.plan_for(Level.ORANGE, "山洪", []).default.first_wave == [V]
    assert policy.plan_for(Level.ORANGE, "山洪", []).default.window_s == 120
    assert policy.plan_for(Level.ORANGE, "暴雨", []).default.first_wave == [V, S, W]
    assert policy.plan_for(Level.YELLOW, "山洪", []).default.first_wave == [S, W]
    assert policy.county_rule(Level.RED, "山洪").label == "hazard 山洪"


def test_the_most_specific_plan_wins_unit_and_hazard_then_unit_then_hazard_then_level() -> None:
    policy = parse_policy(LAYERS, "policy.yaml")
    township, village = "/500238/500238101/", "/500238/500238101/500238101002/"
    other_village = "/500238/500238101/500238101001/"

    flood = policy.plan_for(Level.RED, "山洪", ["500238101"])
    assert flood.default.first_wave == [V]  # the county's 山洪 plan, for units without their own
    assert flood.for_path("/500238/500238102/").first_wave == [V]
    assert flood.for_path(township).first_wave == [S]  # the township's own 山洪 plan
    assert flood.for_path(other_village).first_wave == [S]  # inherited down its subtree
    assert flood.for_path(village + "50023810100201/").first_wave == [ChannelKind.EMAIL]  # nearest override

    rain = policy.plan_for(Level.RED, "暴雨", ["500238101"])
    assert rain.default.first_wave == [V, S, W, B, D]
    assert rain.for_path(other_village).first_wave == [W]  # the township's plan for every hazard
    assert rain.for_path(village).first_wave == [ChannelKind.EMAIL]

    orange = policy.plan_for(Level.ORANGE, "暴雨", ["500238101"])
    assert orange.overrides == {}  # nobody overrides orange
    assert set(policy.plan_for(Level.YELLOW, "暴雨", []).overrides) == {"500238101002"}

    assert policy.effective(Level.RED, "山洪", ["500238", "500238101"]).label == "override 500238101 for 山洪"
    assert policy.effective(Level.RED, "暴雨", ["500238", "500238101"]).label == "override 500238101"
    assert policy.effective(Level.RED, "暴雨", ["500238"]).label == "county default"
    assert policy.summary() == "4 levels, 1 hazard plan, 3 unit overrides"


async def test_a_village_override_applies_to_its_own_targets_only(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    alerts = AlertService(db, clock, parse_policy(VILLAGE_OVERRIDE, "policy.yaml"))
    issued_at = clock.now()
    issued = await alerts.trigger(rainstorm(Level.RED, [county.township]), actor="duty:test")

    async with db.session() as s:
        targets = {
            t.person_id or t.device_id: t
            for t in (await s.execute(select(Target).where(col(Target.alert_id) == issued.alert_id))).scalars()
        }
        first_wave = (await s.execute(select(col(Delivery.person_id), col(Delivery.channel)))).all()
        due = {
            d.target_id: (d.step, utc(d.due_at))
            for d in (await s.execute(select(Deadline).where(col(Deadline.alert_id) == issued.alert_id))).scalars()
        }
    channels: dict[str, set[str]] = {}
    for person, channel in first_wave:
        channels.setdefault(person or "device", set()).add(channel)

    inside = {"v2-head", "g3"}  # 西坪村 and its grid
    outside = {"tw-duty", "v1-head", "g1"}
    for p in inside:
        assert channels[p] == {"sms"}, p
        assert due[targets[p].id] == (1, issued_at + timedelta(minutes=10)), p
    for p in outside:
        assert channels[p] == {"voice", "sms", "wecom"}, p
        assert due[targets[p].id] == (1, issued_at + timedelta(minutes=5)), p
    # the village's plan has no device steps: its siren and broadcast zone are left out, the other village's sound
    assert {d for d in targets if d and d.startswith(("siren", "bz"))} == {"siren-500238101001", "bz-500238101001"}

    # five minutes on, the county plan redials outside; the village still waits for its answers
    engine = EscalationEngine(db, clock)
    clock.advance(minutes=5)
    await engine.run_due()
    redialled = {("g1", "g1"), ("g2", "g2"), ("tw-duty", "tw-duty"), ("v1-head", "v1-head")}
    assert await _voice_calls_at_step(db, 1) == redialled
    clock.advance(minutes=5)
    await engine.run_due()
    # ten minutes: the village's second step calls each silent target's parent: the township for its head,
    # the head for its grid worker
    assert await _voice_calls_at_step(db, 1) - redialled == {("v2-head", "tw-duty"), ("g3", "v2-head")}


async def _voice_calls_at_step(db: Database, step: int) -> set[tuple[str | None, str | None]]:
    """(silent target, person called) for the voice calls of this step of the people's plans."""
    async with db.session() as s:
        rows = await s.execute(
            select(col(Target.person_id), col(Delivery.person_id))
            .join(Target, col(Target.id) == Delivery.target_id)
            .where(col(Delivery.step) == step, col(Delivery.channel) == "voice")
        )
        return {(t, p) for t, p in rows.all()}


# ---- mistakes --------------------------------------------------------------------------------------------------

BROKEN = """\
levels:
  red:
    person_steps:
      - {who: backup, channels: [voice], wait_s: 300}
      - {who: target, channels: [voice, siren], wait_s: 300}
      - {who: parent, channels: [sms], wait_s: 0}
      - {who: parent, channels: [sms], wait_s: 90000}
    device_steps:
      - {who: target, channels: [device], wait_s: 60, colour: red}
  orange: {person_steps: [{who: target, channels: [voice], wait_s: 600}]}
  purple: {person_steps: [{who: target, channels: [voice], wait_s: 600}]}
  blue: {person_steps: [{who: target, channels: [manual], wait_s: 600}]}
unit_overrides:
  - unit: 500238101
    levels: [red]
    person_steps: [{who: target, channels: [voice], wait_s: 60}]
  - unit: 5002381O1
    levels: [red]
    person_steps: [{who: target, channels: [voice], wait_s: 60}]
  - unit: 500238101
    levels: [red]
    person_steps: [{who: target, channels: [sms], wait_s: 60}]
"""


def test_a_broken_file_reports_every_mistake_with_its_line_and_field() -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(BROKEN, "policy.yaml")
    found = {(p.line, p.path): p.message for p in caught.value.problems}
    assert found == {
        (2, "levels"): "no plan for yellow: every level needs the county's plan",
        (4, "levels.red.person_steps.0.who"): "the first step must reach the target itself (who: target), not backup",
        (5, "levels.red.person_steps.1.channels.1"): found[(5, "levels.red.person_steps.1.channels.1")],
        (6, "levels.red.person_steps.2.wait_s"): "Input should be greater than 0",
        (
            7,
            "levels.red.person_steps.3.wait_s",
        ): "a wait of 90000 s (25.0 h) is longer than 24 hours; is it in seconds?",
        (9, "levels.red.device_steps.0.colour"): "unknown field (a typo?)",
        (11, "levels.purple"): found[(11, "levels.purple")],
        (12, "levels.blue.person_steps.0.task"): "a manual step says which task: 鸣锣吹哨 or 敲门入户",
        (17, "unit_overrides.1.unit"): "a unit code is digits only, like 500238101 (got '5002381O1')",
        (20, "unit_overrides.2.unit"): "repeats unit_overrides.0 at red/every hazard for 500238101",
    }
    assert "unknown value 'siren'" in found[(5, "levels.red.person_steps.1.channels.1")]
    assert found[(11, "levels.purple")].startswith("unknown level 'purple'")
    first = str(caught.value).splitlines()[0]
    assert first == "policy.yaml:2:3: levels: no plan for yellow: every level needs the county's plan"
    assert "policy.yaml:6:48: levels.red.person_steps.2.wait_s: Input should be greater than 0" in str(caught.value)


def test_a_hazard_plan_given_twice_and_a_key_given_twice_are_refused() -> None:
    text = (
        COUNTY_LEVELS.replace("  blue:", "  red: {person_steps: [{who: target, channels: [sms], wait_s: 60}]}\n  blue:")
        + """\
hazard_plans:
  - hazards: [山洪, 滑坡]
    levels: [orange]
    person_steps: [{who: target, channels: [voice], wait_s: 60}]
  - hazards: [暴雨, 滑坡]
    levels: [yellow, orange]
    person_steps: [{who: target, channels: [voice], wait_s: 60}]
"""
    )
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "policy.yaml")
    assert [str(p) for p in caught.value.problems] == [
        "policy.yaml:12:3: levels.red: given twice in one mapping (first at line 2)",
        "policy.yaml:18:14: hazard_plans.1.hazards: repeats hazard_plans.0 at orange/滑坡",
    ]


def test_devices_in_the_wrong_list_and_people_in_device_steps_are_refused() -> None:
    text = COUNTY_LEVELS.replace(
        "      - {who: village, channels: [manual], task: 鸣锣吹哨, wait_s: 300}",
        "      - {who: village, channels: [device], wait_s: 300}",
    ).replace(
        "[{who: target, channels: [sms, wecom], wait_s: 1800}]", "[{who: target, channels: [broadcast], wait_s: 9}]"
    )
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "policy.yaml")
    assert [(p.line, p.path, p.message) for p in caught.value.problems] == [
        (9, "levels.red.device_steps.1.channels", "who: village is people; device only reach devices"),
        (11, "levels.yellow.person_steps.0.channels", "broadcast reach devices, not people: put them in device_steps"),
    ]


def test_an_old_style_file_says_what_replaced_devices_only_for_hazards() -> None:
    text = COUNTY_LEVELS.replace("  orange: {", "  orange: {devices_only_for_hazards: [山洪], ")
    with pytest.raises(
        PolicyError, match=r"policy\.yaml:10:\d+: levels\.orange\.devices_only_for_hazards: .*hazard_plans"
    ):
        parse_policy(text, "policy.yaml")


def test_not_yaml_and_not_a_policy_are_reported_with_their_place(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text("levels:\n  red: [\n", encoding="utf-8")
    with pytest.raises(PolicyError, match=rf"^{bad}:3:1: not valid YAML"):
        load_policy(bad)
    with pytest.raises(PolicyError, match=r"policy\.yaml:1:1: the file is empty"):
        parse_policy("# nothing yet\n", "policy.yaml")
    with pytest.raises(PolicyError, match=r"policy\.yaml:1:1: the policy is a mapping"):
        parse_policy("- red\n", "policy.yaml")


def test_the_policy_is_still_a_planner() -> None:
    policy: PolicySet = parse_policy(VILLAGE_OVERRIDE, "policy.yaml")
    plans = policy.plan_for(Level.RED, "暴雨", ["500238101"])
    assert plans.for_path("/500238/500238101/500238101002/50023810100201/").window_s == 600
    assert plans.for_path("/500238/500238101/500238101001/").window_s == 300
