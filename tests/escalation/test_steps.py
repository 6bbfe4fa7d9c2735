"""What a fired deadline does, as the duty officer sees it: who is called next, over what, and when the step after
that is due. No database: escalation.steps decides, the engine only reads and writes."""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from alerting.model.domain import ChannelKind, Level, TargetKind, TaskKind
from alerting.model.plan import Plan, Step, Who
from escalation.policy.rules import default_policy
from escalation.steps import Decision, Done, Reach, Resend, Skip, SkipReason, Wait, next_step, on_deadline

V, S, W, M = ChannelKind.VOICE, ChannelKind.SMS, ChannelKind.WECOM, ChannelKind.MANUAL
B, D = ChannelKind.BROADCAST, ChannelKind.DEVICE
PERSON, DEVICE = TargetKind.PERSON, TargetKind.DEVICE

FIRED = datetime(2026, 7, 2, 2, 0, tzinfo=UTC)  # 10:00 in 巫溪, the deadline of the step fires


def red() -> Plan:
    return default_policy().plan_for(Level.RED, "暴雨", ["500238101"]).default


@dataclass(frozen=True)
class Called:
    """One step as the duty officer's timeline shows it."""

    step: int
    who: Who
    channels: list[ChannelKind]
    task: TaskKind | None = None
    resend: bool = False
    device_failed: bool = False


@dataclass(frozen=True)
class Fired:
    called: list[Called]
    reached_step: int | None  # the step the target is at afterwards (None: the deadline only fired)
    next_due: tuple[int, datetime] | None  # the next step and when it is due, if any


def fire(
    plan: Plan | None,
    kind: TargetKind,
    step_no: int,
    *,
    nobody_at: Container[Who] = (),
    target_open: bool = True,
    now: datetime = FIRED,
) -> Fired:
    """Fire the deadline of `step_no` the way the engine does; `nobody_at` names the steps that reach nobody
    (nobody on the roster, no channel the person can be reached on, no command to resend)."""
    called: list[Called] = []
    decision: Decision = on_deadline(plan, kind, step_no, target_open=target_open)
    while isinstance(decision, Resend | Reach):
        assert plan is not None
        step = decision.step
        called.append(
            Called(
                decision.step_no,
                step.who,
                list(step.channels),
                step.task,
                resend=isinstance(decision, Resend),
                device_failed=isinstance(decision, Reach) and decision.device_failed,
            )
        )
        decision = next_step(plan, kind, decision.step_no, step.who not in nobody_at, now)
    if isinstance(decision, Skip):
        return Fired(called, None, None)
    if isinstance(decision, Wait):
        return Fired(called, decision.step_no, (decision.next_step_no, decision.due_at))
    assert isinstance(decision, Done)
    return Fired(called, decision.step_no, None)


# ---- a silent grid worker in a red warning -------------------------------------------------------------------


def test_after_five_silent_minutes_the_grid_worker_is_redialled_and_the_backup_is_due_five_minutes_later() -> None:
    done = fire(red(), PERSON, 1)
    assert done.called == [Called(1, Who.TARGET, [V])]
    assert done.reached_step == 1
    assert done.next_due == (2, FIRED + timedelta(minutes=5))


def test_still_silent_the_backup_then_the_village_head_then_the_township_then_the_county_duty_room() -> None:
    plan = red()
    called: list[tuple[Who, list[ChannelKind]]] = []
    at = FIRED
    step_no = 2
    while step_no < 5 or not called or called[-1][0] is not Who.COUNTY_DUTY:
        done = fire(plan, PERSON, step_no, now=at)
        called += [(c.who, c.channels) for c in done.called]
        assert done.next_due is not None
        step_no, due = done.next_due
        assert due == at + timedelta(minutes=5)
        at = due
    assert called == [
        (Who.BACKUP, [V, S, W]),
        (Who.PARENT, [V, S, W]),
        (Who.TOWNSHIP_DUTY, [V, S, W]),
        (Who.COUNTY_DUTY, [V, S, W]),
    ]
    assert at == FIRED + timedelta(minutes=20)  # the county duty room's repeat is due 5 minutes after its call


def test_the_county_duty_room_is_the_last_step_and_it_is_called_again_every_five_minutes() -> None:
    at = FIRED
    for _ in range(3):
        done = fire(red(), PERSON, 5, now=at)
        assert done.called == [Called(5, Who.COUNTY_DUTY, [V, S, W])]
        assert done.reached_step == 5
        assert done.next_due == (5, at + timedelta(minutes=5))
        at += timedelta(minutes=5)


def test_the_repeating_county_step_stops_when_the_target_answers_or_the_alert_is_lifted() -> None:
    assert fire(red(), PERSON, 5, target_open=False) == Fired([], None, None)
    assert fire(None, PERSON, 5) == Fired([], None, None)


def test_a_unit_without_backup_goes_straight_on_to_the_village_head_and_waits_from_then() -> None:
    done = fire(red(), PERSON, 2, nobody_at={Who.BACKUP})
    assert [(c.step, c.who) for c in done.called] == [(2, Who.BACKUP), (3, Who.PARENT)]
    assert done.reached_step == 3
    assert done.next_due == (4, FIRED + timedelta(minutes=5))


def test_when_nobody_can_be_reached_up_to_the_end_the_target_stays_at_the_last_step() -> None:
    everyone = {Who.BACKUP, Who.PARENT, Who.TOWNSHIP_DUTY, Who.COUNTY_DUTY}
    done = fire(red(), PERSON, 2, nobody_at=everyone)
    assert [c.who for c in done.called] == [Who.BACKUP, Who.PARENT, Who.TOWNSHIP_DUTY, Who.COUNTY_DUTY]
    assert done.reached_step == 5
    assert done.next_due is None


def test_the_next_step_waits_from_when_the_deadline_fired_not_from_when_it_was_due() -> None:
    late = FIRED + timedelta(minutes=7)  # the engine was down for seven minutes
    done = fire(red(), PERSON, 1, now=late)
    assert done.next_due == (2, late + timedelta(minutes=5))


# ---- answered, ended -----------------------------------------------------------------------------------------


def test_an_answered_grid_worker_gets_nothing_more() -> None:
    assert on_deadline(red(), PERSON, 2, target_open=False) == Skip(SkipReason.ANSWERED)
    assert fire(red(), PERSON, 2, target_open=False) == Fired([], None, None)


def test_after_the_alert_is_lifted_nobody_is_called() -> None:
    assert on_deadline(None, PERSON, 2, target_open=True) == Skip(SkipReason.ENDED)
    assert on_deadline(None, DEVICE, 1, target_open=True) == Skip(SkipReason.ENDED)


def test_a_deadline_past_the_end_of_the_plan_calls_nobody() -> None:
    assert on_deadline(red(), PERSON, 6, target_open=True) == Done(6)
    assert on_deadline(red(), DEVICE, 3, target_open=True) == Done(3)


# ---- a siren that never confirmed ----------------------------------------------------------------------------


def test_a_silent_siren_gets_the_same_command_again_and_the_village_head_is_due_a_minute_later() -> None:
    done = fire(red(), DEVICE, 1)
    assert done.called == [Called(1, Who.TARGET, [B, D], resend=True)]
    assert done.next_due == (2, FIRED + timedelta(minutes=1))


def test_a_siren_still_silent_is_recorded_failed_and_the_village_head_gets_a_gong_task() -> None:
    done = fire(red(), DEVICE, 2)
    assert done.called == [Called(2, Who.VILLAGE, [M], TaskKind.GONG, device_failed=True)]
    assert done.reached_step == 2
    assert done.next_due is None  # the task is the last device step


def test_a_siren_with_no_command_to_resend_goes_straight_to_the_village_head() -> None:
    done = fire(red(), DEVICE, 1, nobody_at={Who.TARGET})
    assert [(c.who, c.resend, c.device_failed) for c in done.called] == [
        (Who.TARGET, True, False),
        (Who.VILLAGE, False, True),
    ]
    assert done.reached_step == 2


# ---- plans of other shapes -----------------------------------------------------------------------------------


def test_a_plan_s_own_waits_decide_when_the_next_call_is() -> None:
    plan = Plan(
        level=Level.BLUE,
        person_steps=[
            Step(who=Who.TARGET, channels=[W], fallback=[S], wait_s=3600),
            Step(who=Who.TARGET, channels=[S], wait_s=1800),
            Step(who=Who.PARENT, channels=[S, W], wait_s=3600),
        ],
    )
    done = fire(plan, PERSON, 1)
    assert done.called == [Called(1, Who.TARGET, [S])]
    assert done.next_due == (2, FIRED + timedelta(minutes=30))


def test_a_person_follows_the_person_steps_and_a_device_the_device_steps() -> None:
    plan = red()
    first = on_deadline(plan, PERSON, 1, target_open=True)
    assert isinstance(first, Reach)
    assert (first.who, first.channels, first.device_failed) == (Who.TARGET, [V], False)
    device = on_deadline(plan, DEVICE, 1, target_open=True)
    assert isinstance(device, Resend)
    assert device.channels == [B, D]


def test_a_last_step_that_reached_nobody_ends_the_plan_and_a_device_s_task_is_not_sent_twice() -> None:
    assert next_step(red(), PERSON, 5, False, FIRED) == Done(5)
    assert next_step(red(), PERSON, 5, True, FIRED) == Wait(5, 5, FIRED + timedelta(minutes=5))
    for reached in (True, False):
        assert next_step(red(), DEVICE, 2, reached, FIRED) == Done(2)
