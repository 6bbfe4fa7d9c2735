"""`jiaoying policy check` and `jiaoying policy show`, as the county's duty room would run them."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from config.cli.policy import duration, offset, policy_app

POLICY = """\
levels:
  red:
    person_steps:
      - {who: target, channels: [voice, sms, wecom], wait_s: 300}
      - {who: target, channels: [voice], wait_s: 300}
      - {who: township_duty, channels: [voice, sms], wait_s: 300}
    device_steps:
      - {who: target, channels: [broadcast, device], wait_s: 60}
      - {who: village, channels: [manual], task: 鸣锣吹哨, wait_s: 300}
  orange: {person_steps: [{who: target, channels: [voice, sms, wecom], wait_s: 600}]}
  yellow: {person_steps: [{who: target, channels: [sms, wecom], wait_s: 1800}]}
  blue: {person_steps: [{who: target, channels: [wecom], fallback: [sms], wait_s: 3600}]}
hazard_plans:
  - hazards: [山洪]
    levels: [red]
    person_steps:
      - {who: target, channels: [voice], wait_s: 120}
      - {who: county_duty, channels: [voice], wait_s: 300}
unit_overrides:
  - unit: "500238101"
    name: 凤凰镇
    levels: [red]
    hazards: [山洪]
    person_steps:
      - {who: target, channels: [voice, sms], wait_s: 90}
      - {who: township_duty, channels: [voice], wait_s: 150}
      - {who: county_duty, channels: [voice, sms, wecom], wait_s: 600}
  - unit: "500238102"
    levels: [red, orange]
    person_steps:
      - {who: target, channels: [sms], wait_s: 600}
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY, encoding="utf-8")
    return path


runner = CliRunner()


def test_check_a_good_file_says_what_it_holds(policy_file: Path) -> None:
    result = runner.invoke(policy_app, ["check", str(policy_file)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "ok: 4 levels, 1 hazard plan, 2 unit overrides"


def test_check_the_shipped_default(tmp_path: Path) -> None:
    shipped = Path(__file__).parents[3] / "escalation" / "policy" / "default_policy.yaml"
    result = runner.invoke(policy_app, ["check", str(shipped)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "ok: 4 levels, 1 hazard plan, 0 unit overrides"


def test_check_a_broken_file_lists_every_mistake_with_its_line(policy_file: Path) -> None:
    broken = (
        POLICY.replace("wait_s: 150}", "wait_s: -150}")  # line 26
        .replace('unit: "500238102"', 'unit: "500238-102"')  # line 28
        .replace("[{who: target, channels: [sms, wecom], wait_s: 1800}]", "[{who: parent, channels: [sms], wait_s: 9}]")
    )
    policy_file.write_text(broken, encoding="utf-8")
    result = runner.invoke(policy_app, ["check", str(policy_file)])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"{policy_file}:11:33: levels.yellow.person_steps.0.who: "
        "the first step must reach the target itself (who: target), not parent",
        f"{policy_file}:26:57: unit_overrides.0.person_steps.1.wait_s: Input should be greater than 0",
        f"{policy_file}:28:11: unit_overrides.1.unit: a unit code is digits only, like 500238101 (got '500238-102')",
        f"3 problems in {policy_file}",
    ]


def test_check_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(policy_app, ["check", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_show_the_plan_of_a_township_with_its_own_flood_plan(policy_file: Path) -> None:
    result = runner.invoke(
        policy_app,
        ["show", "--level", "red", "--hazard", "山洪", "--unit", "500238101", "--file", str(policy_file)],
        terminal_width=120,
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"rule: override 500238101 for 山洪 凤凰镇 ({policy_file} line 20)" in out
    # each step at the sum of the waits before it: 90 s, then 150 s more
    rows = [line for line in out.splitlines() if "│ t+" in line]
    assert [r.split("│")[1].strip() for r in rows[:3]] == ["t+0", "t+1 min 30 s", "t+4 min"]
    assert "乡镇值班员" in rows[1]
    assert "县值班室" in rows[2]
    assert "智能外呼、短信、企业微信" in rows[2]
    # the override has no device steps
    assert "no device steps" in out


def test_show_a_village_under_an_override_and_a_unit_without_one(policy_file: Path) -> None:
    village = runner.invoke(
        policy_app, ["show", "--level", "red", "--unit", "500238102007", "--file", str(policy_file)], terminal_width=120
    )
    assert village.exit_code == 0, village.output
    assert "rule: override 500238102 " in village.stdout
    assert "500238102007 follows the override of 500238102" in village.stdout

    flood = runner.invoke(
        policy_app,
        ["show", "--level", "red", "--hazard", "山洪", "--unit", "500238103", "--file", str(policy_file)],
        terminal_width=120,
    )
    assert f"rule: hazard 山洪 ({policy_file} line 14)" in flood.stdout
    assert "t+2 min" in flood.stdout

    county = runner.invoke(policy_app, ["show", "--level", "red", "--file", str(policy_file)], terminal_width=120)
    assert f"rule: county default ({policy_file} line 3)" in county.stdout
    rows = [line for line in county.stdout.splitlines() if "│ t+" in line]
    people, devices = rows[:3], rows[3:]
    assert [r.split("│")[1].strip() for r in people] == ["t+0", "t+5 min", "t+10 min"]
    assert [r.split("│")[1].strip() for r in devices] == ["t+0", "t+1 min"]
    assert "设备本身" in devices[0]
    assert "应急广播、预警设备" in devices[0]
    assert "人工任务：鸣锣吹哨" in devices[1]


def test_show_without_a_file_uses_the_built_in_policy(tmp_path: Path) -> None:
    env = {"JIAOYING_POLICY_FILE": None, "JIAOYING_CONFIG": str(tmp_path / "none.toml")}
    result = runner.invoke(policy_app, ["show", "--level", "orange", "--hazard", "山洪"], env=env, terminal_width=120)
    assert result.exit_code == 0, result.output
    assert "rule: hazard 山洪 (default_policy.yaml line" in result.stdout
    assert "t+30 min" in result.stdout


def test_durations_read_like_a_duty_officer_says_them() -> None:
    assert [duration(s) for s in (45, 300, 330, 3600, 5400)] == ["45 s", "5 min", "5 min 30 s", "1 h", "1 h 30 min"]
    assert (offset(0), offset(600)) == ("t+0", "t+10 min")
