"""What a fired deadline does, decided without a database.

A target's plan is a list of steps (`Plan.person_steps` for a person, `Plan.device_steps` for a siren or a
broadcast zone). When the deadline of step `n` fires, the engine asks `on_deadline` what to do first, does it
(writes the deliveries, re-queues the command, records the audit entries) and tells `next_step` whether anyone
was reached; `next_step` then says whether to run the following step at once (nobody could be reached at this
one), to wait for the target's answer until the next deadline, or that the plan has run out. The engine
(escalation.engine) does the reading and the writing; everything here is pure and tested without a database
(tests/escalation/test_steps.py).

The decisions:
- `Skip`: the alert ended (解除, closed) or the target already answered: the deadline fires and nothing goes out.
- `Resend`: a device step for the device itself: the same command (same command_id) goes to the device again.
- `Reach`: contact the people the step names (`who`) over its channels, with its manual task if it has one;
  for a device target this first records the device as failed, since people now stand in for it.
- `Wait`: the step ran and reached someone; the next step is due `wait_s` after the deadline fired.
- `Done`: nobody could be reached at the last step (or the plan has no step this far): nothing more is
  scheduled and the target stays silent. A person's last step that did reach someone is not the end: it repeats
  at its wait until the target answers or the alert ends (DESIGN.md: "county duty room every 5 min"), so the loop
  is never quietly given up while someone can still be called. A device's last step is a manual task, which
  stays open until answered and is not sent twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from alerting.model.domain import ChannelKind, TargetKind, TaskKind
from alerting.model.plan import Plan, Step, Who


class SkipReason(StrEnum):
    ENDED = "ended"  # the alert is no longer active
    ANSWERED = "answered"  # the target is no longer open


@dataclass(frozen=True)
class Skip:
    """Nothing goes out and nothing is scheduled: the deadline only fires."""

    reason: SkipReason


@dataclass(frozen=True)
class Resend:
    """Send the device the command it already has again, over these channels (the same delivery, re-queued)."""

    step_no: int
    step: Step

    @property
    def channels(self) -> list[ChannelKind]:
        return list(self.step.channels)


@dataclass(frozen=True)
class Reach:
    """Contact whoever `who` names for the target over the step's channels (or its fallback), with its task."""

    step_no: int
    step: Step
    device_failed: bool  # a device target never confirmed: record it as failed before people stand in for it

    @property
    def who(self) -> Who:
        return self.step.who

    @property
    def channels(self) -> list[ChannelKind]:
        return list(self.step.channels)

    @property
    def task(self) -> TaskKind | None:
        return self.step.task


@dataclass(frozen=True)
class Wait:
    """Step `step_no` ran and reached someone; step `next_step_no` is due at `due_at` unless the target answers."""

    step_no: int
    next_step_no: int
    due_at: datetime


@dataclass(frozen=True)
class Done:
    """Step `step_no` is the furthest the plan goes: nothing more is scheduled for the target."""

    step_no: int


Action = Resend | Reach
Decision = Skip | Resend | Reach | Wait | Done


def steps_for(plan: Plan, kind: TargetKind) -> list[Step]:
    """A person follows the plan's person steps, a device (siren, broadcast zone) its device steps."""
    return plan.person_steps if kind is TargetKind.PERSON else plan.device_steps


def on_deadline(plan: Plan | None, kind: TargetKind, step_no: int, *, target_open: bool) -> Decision:
    """What the fired deadline of step `step_no` does first. `plan` is None when the alert is no longer active."""
    if plan is None:
        return Skip(SkipReason.ENDED)
    if not target_open:
        return Skip(SkipReason.ANSWERED)
    return _run(steps_for(plan, kind), kind, step_no)


def next_step(plan: Plan, kind: TargetKind, step_no: int, reached: bool, now: datetime) -> Decision:
    """After step `step_no` ran at `now`: `reached` says whether it reached anyone (a delivery written, a command
    re-queued). Nobody reached: the following step runs at once. Otherwise the following step waits for the
    target's answer for this step's `wait_s`. A person's last step, when it reached someone, comes round again
    after its wait; a last step that reached nobody, or a device's last step, is where the plan ends."""
    steps = steps_for(plan, kind)
    following = step_no + 1
    if following >= len(steps):
        # A device's last step hands it to people as a manual task that stays open until it is answered; sending
        # the task again would count one village's households twice, so only a person's last step repeats.
        if reached and kind is TargetKind.PERSON and step_no < len(steps):
            return Wait(step_no, step_no, now + timedelta(seconds=steps[step_no].wait_s))
        return Done(step_no)
    if not reached:
        return _run(steps, kind, following)
    return Wait(step_no, following, now + timedelta(seconds=steps[step_no].wait_s))


def _run(steps: list[Step], kind: TargetKind, step_no: int) -> Decision:
    if step_no >= len(steps):
        return Done(step_no)
    step = steps[step_no]
    if kind is TargetKind.DEVICE and step.who is Who.TARGET:
        return Resend(step_no, step)
    return Reach(step_no, step, device_failed=kind is TargetKind.DEVICE)
