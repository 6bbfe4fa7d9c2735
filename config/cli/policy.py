"""`jiaoying policy`: check a policy file before it goes live, and show the plan a unit would follow."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from alerting.model.domain import ChannelKind, Level
from alerting.model.plan import Step, Who
from config.settings import Settings
from escalation.policy.rules import PolicyError, PolicySet, Rule, load_policy

policy_app = typer.Typer(help="Check escalation policies and show the plan a unit gets.", no_args_is_help=True)


def _consoles() -> tuple[Console, Console]:
    # made per command, so output goes wherever stdout and stderr are at the time (a test runner swaps them)
    return Console(highlight=False), Console(stderr=True, highlight=False)


def _load(path: Path | None, err: Console) -> PolicySet:
    try:
        return load_policy(path)
    except PolicyError as exc:
        for line in [str(p) for p in exc.problems] or [str(exc)]:
            err.print(line, markup=False, soft_wrap=True)
        count = len(exc.problems) or 1
        where = escape(str(path or "the built-in policy"))
        err.print(f"[bold red]{count} problem{'' if count == 1 else 's'}[/] in {where}", soft_wrap=True)
        raise typer.Exit(2) from None
    except (OSError, UnicodeDecodeError) as exc:
        err.print(f"[bold red]error:[/] cannot read {escape(f'{path}: {exc}')}", soft_wrap=True)
        raise typer.Exit(2) from None


@policy_app.command("check")
def check(file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="the policy YAML file")]) -> None:
    """Validate a policy file and list every mistake with its line, or say what it holds.

    Example: [bold]jiaoying policy check policy.yaml[/]
    """
    out, err = _consoles()
    policy = _load(file, err)
    out.print(f"ok: {policy.summary()}", markup=False, soft_wrap=True)


def duration(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours} h" if hours else "", f"{minutes} min" if minutes else "", f"{secs} s" if secs else ""]
    return " ".join(p for p in parts if p) or "0 s"


def offset(seconds: int) -> str:
    return f"t+{duration(seconds)}" if seconds else "t+0"


def _channels(step: Step) -> str:
    text = "、".join(c.label for c in step.channels)
    if step.fallback:
        text += f"（无则{'、'.join(c.label for c in step.fallback)}）"
    if step.task:
        text += f"：{step.task.value}"
    return text


def _who(step: Step, *, device: bool) -> str:
    return "设备本身" if device and step.who is Who.TARGET else step.who.label


def timeline(title: str, steps: list[Step], *, device: bool) -> Table:
    """Each step at the time it goes out if nobody answers: the sum of the waits before it, from the issue."""
    table = Table(title=title, title_justify="left")
    table.add_column("时间", no_wrap=True)
    table.add_column("步", justify="right", no_wrap=True)
    table.add_column("对象 who", overflow="fold")
    table.add_column("渠道 channels", overflow="fold")
    table.add_column("等待 wait", no_wrap=True)
    at = 0
    for i, step in enumerate(steps):
        # the engine schedules nothing after the last step, so its wait is never used
        wait = "—" if i == len(steps) - 1 else duration(step.wait_s)
        table.add_row(offset(at), str(i + 1), _who(step, device=device), _channels(step), wait)
        at += step.wait_s
    return table


def _unit_path(policy: PolicySet, unit: str) -> list[str]:
    """The unit and the override units above it, county first. Without the directory, "above" is read from the
    statistical codes (500238101 is above 500238101002); the engine itself follows the unit tree."""
    above = sorted((c for c in policy.override_units() if unit.startswith(c) and c != unit), key=len)
    return [*above, unit]


def _source(rule: Rule, file: Path | None) -> str:
    where = f"{file or 'default_policy.yaml'}" + (f" line {rule.line}" if rule.line else "")
    name = f" {rule.unit_name}" if rule.unit_name else ""
    return f"{rule.label}{name} ({where})"


@policy_app.command("show")
def show(
    level: Annotated[Level, typer.Option(help="red | orange | yellow | blue")],
    hazard: Annotated[
        str | None, typer.Option(help="暴雨, 山洪, 地质灾害 …; none: a hazard without a plan of its own")
    ] = None,
    unit: Annotated[str | None, typer.Option(help="unit code; none: the county's plan")] = None,
    file: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="policy file; default JIAOYING_POLICY_FILE, else the built-in"),
    ] = None,
) -> None:
    """Show the plan a unit follows for a level and hazard, as a timeline from the moment the alert is issued.

    Example: [bold]jiaoying policy show --level red --hazard 山洪 --unit 500238101[/]
    """
    out, err = _consoles()
    if file is None:
        try:
            file = Settings().policy_file
        except ValidationError as exc:
            err.print(f"configuration error: {exc}", markup=False)
            raise typer.Exit(2) from None
    policy = _load(file, err)
    path = _unit_path(policy, unit) if unit else []
    rule = policy.effective(level, hazard, path)

    what = hazard or "any hazard without a plan of its own"
    heading = f"{level.label}预警 {level.value} · {what} · {unit or 'county 全县'}"
    out.print(f"[bold]{heading}[/]")
    out.print(f"rule: {_source(rule, file)}", markup=False, soft_wrap=True)
    if unit and rule.unit and rule.unit != unit:
        out.print(f"{unit} follows the override of {rule.unit}, which it is under by its code.", markup=False)
    out.print(timeline("责任人 people", rule.plan.person_steps, device=False))
    if rule.plan.device_steps:
        out.print(timeline("预警设备与应急广播 devices", rule.plan.device_steps, device=True))
        kinds = {c for c in rule.plan.device_steps[0].channels}
        skipped = [k.label for k in (ChannelKind.BROADCAST, ChannelKind.DEVICE) if k not in kinds]
        if skipped:
            out.print(f"not in the first wave: {'、'.join(skipped)}", markup=False)
    else:
        out.print("no device steps: sirens and broadcast zones are not used", markup=False)
    end = sum(s.wait_s for s in rule.plan.person_steps[:-1])
    out.print(
        f"after {offset(end)} no further step: whoever is still silent stays open for the duty room to answer for.",
        markup=False,
    )
