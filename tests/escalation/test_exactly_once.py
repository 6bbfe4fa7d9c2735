"""Every escalation step fires exactly once: across a crash and restart, and with two engine processes on one file.

The engines are real processes (`python -m config.engine_process run`) on a SQLite file; the alert is issued
from the test process, as the duty room's web process would. Policy waits are one or two seconds, so the
chain runs in real time. Sirens go over the sandbox device channel (`--sandbox-devices`): no broker is needed,
and the device steps (resend, then the village's manual task) run the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlmodel import col

from alerting.audit import chain as audit
from alerting.issue.alerts import AlertService
from alerting.model.clock import ManualClock, SystemClock
from alerting.model.domain import TASK_SHARED_WITH, DeadlineState, DeliveryState, Level, Purpose, TargetKind
from alerting.people.liveness import ProcessIdentity, ProcessRegistry
from alerting.store.db import Database
from alerting.store.tables import AuditEvent, Deadline, Delivery, Target
from escalation.engine import EscalationEngine
from escalation.policy.rules import PolicySet, load_policy
from tests.conftest import SmallCounty
from tests.harness import RED
from tests.processes import exited_process

pytestmark = pytest.mark.timeout(90)

STEP_EVENTS = ("target.escalated", "escalation.nobody")
READY_S = 20.0  # a cold interpreter importing the engine on a busy machine

# every level is required; only red is used. Waits: 2 s for the first wave, 1 s for each step after it; the last
# step of a person repeats (DESIGN.md), here after 10 minutes, so a run sees each step once and one repeat due.
POLICY = """\
levels:
  red:
    person_steps:
      - {who: target, channels: [voice, sms, wecom], wait_s: 2}
      - {who: target, channels: [voice], wait_s: 1}
      - {who: backup, channels: [voice, sms, wecom], wait_s: 1}
      - {who: parent, channels: [voice, sms, wecom], wait_s: 1}
      - {who: township_duty, channels: [voice, sms, wecom], wait_s: 1}
      - {who: county_duty, channels: [voice, sms, wecom], wait_s: 600}
    device_steps:
      - {who: target, channels: [broadcast, device], wait_s: 2}
      - {who: target, channels: [broadcast, device], wait_s: 1}
      - {who: village, channels: [manual], task: 鸣锣吹哨, wait_s: 1}
  orange:
    person_steps: [{who: target, channels: [sms], wait_s: 60}]
  yellow:
    person_steps: [{who: target, channels: [sms], wait_s: 60}]
  blue:
    person_steps: [{who: target, channels: [sms], wait_s: 60}]
"""


# ---- engine processes --------------------------------------------------------------------------


class EngineProcess:
    """`python -m config.engine_process run` on the test's database, logging to a file."""

    def __init__(self, tmp_path: Path, db_url: str, policy: Path, node: str) -> None:
        self.node = node
        self.log_file = tmp_path / f"engine-{node}-{datetime.now(UTC):%H%M%S%f}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("JIAOYING_")}
        env.update(
            JIAOYING_DATABASE_URL=db_url,
            JIAOYING_POLICY_FILE=str(policy),
            JIAOYING_CONFIG=str(tmp_path / "no-such-config.toml"),
            JIAOYING_SECRET_KEY="test-secret",
            JIAOYING_AUDIT_KEY=os.environ["JIAOYING_AUDIT_KEY"],  # the test reads their audit with it
            JIAOYING_LOG_LEVEL="info",
            HOSTNAME=node,  # the node name in every claim; processes may share one (see test_same_host.py)
        )
        self.env = env
        self.cwd = tmp_path
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, *extra: str) -> None:
        args = ["-m", "config.engine_process", "run", "--sandbox-devices", "--poll", "0.2", *extra]
        with self.log_file.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, *args, env=self.env, cwd=self.cwd, stdout=log, stderr=log
            )

    @property
    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    async def ready(self) -> None:
        assert self.process is not None
        await wait_for(lambda: _true(self.process is not None and "engine.running" in self.log), READY_S, self)
        assert self.process.returncode is None, self.log[-3000:]

    def owner_prefix(self) -> str:
        return f"escalation/{self.node}/"

    async def kill(self, sig: int = signal.SIGKILL, grace_s: float = 10.0) -> int:
        process = self.process
        if process is None or process.returncode is not None:
            return process.returncode if process and process.returncode is not None else 0
        process.send_signal(sig)
        try:
            async with asyncio.timeout(grace_s):
                return await process.wait()
        except TimeoutError:
            process.kill()
            return await process.wait()


@contextlib.asynccontextmanager
async def engines(*procs: EngineProcess) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for p in procs:
            await p.kill(signal.SIGKILL, grace_s=5)


async def _true(value: bool) -> bool:
    return value


async def wait_for(
    check: Callable[[], Awaitable[bool]], within_s: float, *watch: EngineProcess, what: str = "condition"
) -> None:
    """Poll `check` until it holds; fail after `within_s`, or as soon as a watched engine process exits."""
    deadline = asyncio.get_running_loop().time() + within_s
    while not await check():
        for p in watch:
            if p.process is not None and p.process.returncode is not None:
                pytest.fail(f"engine {p.node} exited with {p.process.returncode}:\n{p.log[-3000:]}")
        if asyncio.get_running_loop().time() > deadline:
            logs = "\n".join(f"--- {p.node}\n{p.log[-2000:]}" for p in watch)
            pytest.fail(f"{what} not reached within {within_s} s\n{logs}")
        await asyncio.sleep(0.1)


# ---- what the store says -----------------------------------------------------------------------


async def scalar(db: Database, query: Any) -> int:
    async with db.session() as s:
        return int(await s.scalar(query) or 0)


def pending_deadlines() -> Any:
    return select(func.count()).select_from(Deadline).where(col(Deadline.state) == DeadlineState.PENDING.value)


def unsent_deliveries() -> Any:
    return (
        select(func.count())
        .select_from(Delivery)
        .where(col(Delivery.state).in_([DeliveryState.PENDING.value, DeliveryState.SENDING.value]))
    )


async def chain_finished(db: Database) -> bool:
    """Nothing waiting to be sent and no deadline due soon: every silent target went through its whole plan and
    only the repeats of the last steps, ten minutes out, are left."""
    soon = datetime.now(UTC) + timedelta(minutes=5)
    due_soon = await scalar(db, pending_deadlines().where(col(Deadline.due_at) < soon))
    return due_soon == 0 and await scalar(db, unsent_deliveries()) == 0


async def step_events(db: Database, alert_id: int) -> list[AuditEvent]:
    async with db.session() as s:
        rows = await s.execute(
            select(AuditEvent)
            .where(col(AuditEvent.alert_id) == alert_id, col(AuditEvent.kind).in_(STEP_EVENTS))
            .order_by(col(AuditEvent.seq))
        )
        return list(rows.scalars())


async def targets(db: Database, alert_id: int) -> list[Target]:
    async with db.session() as s:
        return list((await s.execute(select(Target).where(col(Target.alert_id) == alert_id))).scalars())


async def deadlines(db: Database, alert_id: int) -> list[Deadline]:
    async with db.session() as s:
        return list((await s.execute(select(Deadline).where(col(Deadline.alert_id) == alert_id))).scalars())


def steps_of(policy: PolicySet, t: Target) -> int:
    plan = policy.plan_for(Level.RED, RED.hazard, RED.units).for_path("")
    return len(plan.person_steps if t.kind == TargetKind.PERSON.value else plan.device_steps)


async def assert_every_step_fired_once(db: Database, policy: PolicySet, alert_id: int) -> dict[tuple[str, int], Any]:
    """Each silent target went through steps 1..n-1 of its plan, once each and in order, and has the repeat of its
    last step scheduled if it is a person; returns the step events."""
    events = await step_events(db, alert_id)
    by_target: dict[str, list[int]] = defaultdict(list)
    for e in events:
        by_target[str(e.subject)].append(int(e.data["step"]))
    found = {(str(e.subject), int(e.data["step"])): e for e in events}
    all_targets = await targets(db, alert_id)
    assert all_targets
    for t in all_targets:
        expected = list(range(1, steps_of(policy, t)))
        assert by_target[t.id] == expected, f"{t.kind} {t.person_id or t.device_id}: steps {by_target[t.id]}"
        assert t.step == expected[-1]
    rows = await deadlines(db, alert_id)
    fired = [d for d in rows if d.state == DeadlineState.FIRED.value]
    per_step = Counter((d.target_id, d.step) for d in fired)
    assert max(per_step.values()) == 1, "a (target, step) fired twice"
    kinds = {t.id: t for t in all_targets}
    repeats = [d for d in rows if d.state != DeadlineState.FIRED.value]
    assert {d.state for d in repeats} <= {DeadlineState.PENDING.value}
    assert all(d.step == steps_of(policy, kinds[d.target_id]) - 1 for d in repeats), "a pending step is not the last"
    assert Counter(d.target_id for d in repeats).most_common(1)[0][1] == 1, "a target has two repeats scheduled"
    people = [t for t in all_targets if t.kind == TargetKind.PERSON.value]
    assert {d.target_id for d in repeats} == {t.id for t in people}, "a silent person's last step does not repeat"
    # a deadline exists for each step that reached someone; a step with nobody to reach was passed straight on
    assert set(per_step) <= set(found)
    verified = await audit.verify(db)
    assert verified.ok, verified.reason
    return found


async def sends_per_delivery(db: Database, alert_id: int) -> dict[str, list[int]]:
    """delivery id -> the attempt numbers its `delivery.sent` audit events carry, in order."""
    async with db.session() as s:
        rows = await s.execute(
            select(AuditEvent)
            .where(col(AuditEvent.alert_id) == alert_id, col(AuditEvent.kind) == "delivery.sent")
            .order_by(col(AuditEvent.seq))
        )
        sent: dict[str, list[int]] = defaultdict(list)
        for e in rows.scalars():
            sent[str(e.subject)].append(int(e.data["attempt"]))
    return sent


# ---- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY, encoding="utf-8")
    return path


@pytest.fixture
def policy(policy_file: Path) -> PolicySet:
    return load_policy(policy_file)


# ---- the stories -------------------------------------------------------------------------------


async def test_a_killed_engine_s_successor_fires_every_overdue_step_once_in_order_and_late(
    tmp_path: Path, db: Database, county: SmallCounty, policy_file: Path, policy: PolicySet
) -> None:
    first = EngineProcess(tmp_path, db.url, policy_file, "duty-host")
    second = EngineProcess(tmp_path, db.url, policy_file, "duty-host")  # the same machine, restarted
    async with engines(first, second):
        await first.start()
        await first.ready()
        issued = await AlertService(db, SystemClock(), policy).trigger(RED, actor="duty:test")

        async def mid_chain() -> bool:
            fired = await scalar(
                db,
                select(func.count())
                .select_from(Deadline)
                .where(col(Deadline.state) == DeadlineState.FIRED.value, col(Deadline.alert_id) == issued.alert_id),
            )
            first_wave_out = await scalar(db, unsent_deliveries().where(col(Delivery.step) == 0)) == 0
            return first_wave_out and fired >= 1 and await scalar(db, pending_deadlines()) >= 5

        await wait_for(mid_chain, 15, first, what="first wave sent and a step fired")
        assert await first.kill(signal.SIGKILL) == -signal.SIGKILL
        killed_at = datetime.now(UTC)

        async def several_overdue() -> bool:
            now = datetime.now(UTC) - timedelta(seconds=1)
            return await scalar(db, pending_deadlines().where(col(Deadline.due_at) < now)) >= 5

        await wait_for(several_overdue, 10, what="deadlines overdue")
        overdue = {
            (d.target_id, d.step): d.due_at
            for d in await deadlines(db, issued.alert_id)
            if d.state == DeadlineState.PENDING.value
        }
        await second.start()
        await second.ready()
        await wait_for(lambda: chain_finished(db), 25, second, what="the whole chain")
        assert await second.kill(signal.SIGTERM) == 0  # a clean stop on SIGTERM

    events = await assert_every_step_fired_once(db, policy, issued.alert_id)
    by_first = [e for e in events.values() if e.actor.startswith(first.owner_prefix()) and e.at < killed_at]
    assert by_first, "the first engine fired no step before it was killed"
    rows = {
        (d.target_id, d.step): d for d in await deadlines(db, issued.alert_id) if d.state == DeadlineState.FIRED.value
    }
    late = [(rows[key], events[key]) for key in overdue]
    assert len(late) >= 5
    for d, e in late:
        assert d.fired_at is not None
        assert e.data["late_by_s"] > 1.0, e.data
        assert e.data["late_by_s"] == pytest.approx((d.fired_at - d.due_at).total_seconds(), abs=0.01)
        assert e.data["due_at"] == d.due_at.isoformat()
    fired_order = [d for d, _ in sorted(late, key=lambda de: (de[0].fired_at, de[1].seq))]
    assert [d.due_at for d in fired_order] == sorted(d.due_at for d in fired_order), "overdue fired out of order"


# on PostgreSQL the two processes claim with SKIP LOCKED, on SQLite the single writer takes turns
@pytest.mark.both_databases
async def test_two_engine_processes_on_one_file_fire_every_step_once_and_send_every_delivery_once(
    tmp_path: Path, db: Database, county: SmallCounty, policy_file: Path, policy: PolicySet
) -> None:
    a = EngineProcess(tmp_path, db.url, policy_file, "node-a")
    b = EngineProcess(tmp_path, db.url, policy_file, "node-b")
    async with engines(a, b):
        # small claims, so the two processes take turns on the same due deadlines and deliveries
        await asyncio.gather(a.start("--claim-batch", "2"), b.start("--claim-batch", "2"))
        await asyncio.gather(a.ready(), b.ready())
        issued = await AlertService(db, SystemClock(), policy).trigger(RED, actor="duty:test")
        await asyncio.sleep(1)  # let the first wave go out before looking for the end
        await wait_for(lambda: chain_finished(db), 30, a, b, what="the whole chain")
        assert await a.kill(signal.SIGTERM) == 0
        assert await b.kill(signal.SIGTERM) == 0

    events = await assert_every_step_fired_once(db, policy, issued.alert_id)
    fired_by = Counter(e.actor.split("/")[1] for e in events.values())
    assert set(fired_by) == {"node-a", "node-b"}, f"only one process fired steps: {fired_by}"

    sent = await sends_per_delivery(db, issued.alert_id)
    async with db.session() as s:
        all_deliveries = list(
            (await s.execute(select(Delivery).where(col(Delivery.alert_id) == issued.alert_id))).scalars()
        )
    # a village's second silent device shares the task already out (escalation.shared_tasks): nothing sent for it
    shared = [d for d in all_deliveries if d.detail and d.detail.get(TASK_SHARED_WITH)]
    assert {d.state for d in shared} <= {DeliveryState.CANCELLED.value}
    assert all(sent[d.id] == [] for d in shared)
    given = [d for d in all_deliveries if d.purpose == Purpose.TASK.value and d not in shared]
    tasks = Counter((d.person_id, d.channel) for d in given)
    assert tasks and set(tasks.values()) == {1}, f"a village head was sent one village's task twice: {tasks}"
    assert {d.state for d in all_deliveries if d not in shared} <= {
        DeliveryState.SENT.value,
        DeliveryState.DELIVERED.value,
    }
    for d in (d for d in all_deliveries if d not in shared):
        # a device step resends the same delivery (same command id) as its next attempt; nothing else repeats
        assert sent[d.id] == list(range(1, len(sent[d.id]) + 1)), f"{d.channel} delivery {d.id}: attempts {sent[d.id]}"
        if d.device_id is None:
            assert sent[d.id] == [1], f"{d.channel} to {d.person_id} sent {len(sent[d.id])} times"
    senders = Counter(str(e) for e in await dispatch_nodes(db, issued.alert_id))
    assert set(senders) == {"node-a", "node-b"}, f"only one process sent: {senders}"


async def dispatch_nodes(db: Database, alert_id: int) -> list[str]:
    async with db.session() as s:
        actors = await s.execute(
            select(col(AuditEvent.actor)).where(
                col(AuditEvent.alert_id) == alert_id, col(AuditEvent.kind) == "delivery.sent"
            )
        )
        return [a.split("/")[0] for a in actors.scalars()]


# ---- the claim and the fence, step by step -----------------------------------------------------


@pytest.mark.both_databases
async def test_a_claim_that_outlived_its_engine_is_released_and_its_stale_holder_cannot_fire(
    db: Database, clock: ManualClock, county: SmallCounty, policy: PolicySet
) -> None:
    issued = await AlertService(db, clock, policy).trigger(
        RED.model_copy(update={"units": ["50023810100101"]}), actor="t"
    )
    clock.advance(seconds=3)
    stuck = EscalationEngine(db, clock, owner="escalation/host-1/aaaa", lease=timedelta(seconds=30))
    claims = await stuck.claims.claim()
    assert len(claims) == 1  # g1's redial, claimed by an engine that then hangs

    other = EscalationEngine(db, clock, owner="escalation/host-2/bbbb", lease=timedelta(seconds=30))
    assert await other.run_due() == 0  # a live claim is its holder's
    assert await other.claims.release_stale_claims() == 0  # first look
    clock.advance(seconds=31)
    assert await other.claims.release_stale_claims() == 1  # unchanged for a whole lease: released
    assert await other.run_due() == 1
    assert not await stuck.fire(claims[0])  # the old holder wakes up: its fence has moved, it writes nothing

    events = await step_events(db, issued.alert_id)
    assert [(e.actor, e.data["step"]) for e in events] == [("escalation/host-2/bbbb", 1)]
    assert events[0].data["late_by_s"] == pytest.approx(32.0)


async def registered_engine(
    db: Database, clock: ManualClock, node: str, identity: ProcessIdentity | None = None
) -> EscalationEngine:
    registry = ProcessRegistry(Database(db.url), clock, node, identity=identity)
    await registry.register()
    return EscalationEngine(db, clock, owner=f"escalation/{registry.owner}", registry=registry)


@pytest.mark.both_databases
async def test_a_restarted_engine_releases_what_its_dead_predecessor_claimed_at_once(
    db: Database, clock: ManualClock, county: SmallCounty, policy: PolicySet
) -> None:
    issued = await AlertService(db, clock, policy).trigger(
        RED.model_copy(update={"units": ["50023810100101"]}), actor="t"
    )
    clock.advance(seconds=3)
    dead = await registered_engine(db, clock, "host-1", exited_process())
    assert len(await dead.claims.claim()) == 1  # and then the process died; its heartbeat is still fresh
    # another machine cannot tell a dead claimer from a slow one until the heartbeat goes stale
    elsewhere = await registered_engine(db, clock, "host-2", ProcessIdentity("another-machine:1", 4242, 1))
    assert await elsewhere.run_due() == 0
    restarted = await registered_engine(db, clock, "host-1")  # this machine sees the pid is gone
    assert await restarted.run_due() == 1
    events = await step_events(db, issued.alert_id)
    assert [(e.actor, e.data["step"]) for e in events] == [(restarted.owner, 1)]
    assert restarted.claims.registry is not None and dead.claims.registry is not None
    assert restarted.claims.registry.slot == dead.claims.registry.slot == 0  # the restart took its predecessor's place


@pytest.mark.both_databases
async def test_a_live_sibling_on_the_same_node_keeps_its_claims_past_the_lease(
    db: Database, clock: ManualClock, county: SmallCounty, policy: PolicySet
) -> None:
    issued = await AlertService(db, clock, policy).trigger(
        RED.model_copy(update={"units": ["50023810100101"]}), actor="t"
    )
    clock.advance(seconds=3)
    working = await registered_engine(db, clock, "duty-host")
    claims = await working.claims.claim()
    assert len(claims) == 1
    sibling = await registered_engine(db, clock, "duty-host")  # a second process on the same machine
    assert sibling.claims.registry is not None and working.claims.registry is not None
    assert (working.claims.registry.slot, sibling.claims.registry.slot) == (0, 1)
    assert await sibling.run_due() == 0
    for _ in range(3):  # well past the one-minute claim lease, with the holder's heartbeat going on
        clock.advance(seconds=25)
        assert await working.claims.registry.beat()
        assert await sibling.claims.release_stale_claims() == 0
        assert await sibling.claims.release_dead_claims() == 0
    assert await sibling.run_due() == 0
    assert await working.fire(claims[0])  # the holder fires it, late but once

    # when the holder stops beating (it hangs), the sibling takes over the next claim after the heartbeat ages
    clock.advance(seconds=2)
    claims = await working.claims.claim()
    assert len(claims) == 1
    clock.advance(seconds=31)
    assert await sibling.claims.release_dead_claims() == 1
    assert await sibling.run_due() == 1
    assert not await working.fire(claims[0])
    events = await step_events(db, issued.alert_id)
    assert [(e.actor, e.data["step"]) for e in events] == [(working.owner, 1), (sibling.owner, 2)]


async def test_the_engine_runner_refuses_a_broken_policy_with_one_line_and_exit_2(tmp_path: Path, db: Database) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("levels:\n  red:\n    person_steps: []\n", encoding="utf-8")
    runner = EngineProcess(tmp_path, db.url, broken, "duty-host")
    async with engines(runner):
        await runner.start()
        assert runner.process is not None
        async with asyncio.timeout(READY_S):
            code = await runner.process.wait()
    assert code == 2
    assert "error:" in runner.log
    assert "broken.yaml" in runner.log
    assert "Traceback" not in runner.log
