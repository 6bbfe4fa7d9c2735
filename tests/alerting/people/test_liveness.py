"""The process registry: slots per node, a restart taking its dead predecessor's slot, a hung process coming back."""

from __future__ import annotations

import asyncio

import pytest

from alerting.model.clock import ManualClock
from alerting.people.liveness import ProcessIdentity, ProcessRegistry, node_name
from alerting.store.db import Database
from tests.processes import exited_process

pytestmark = pytest.mark.both_databases


def registry(db: Database, clock: ManualClock, identity: ProcessIdentity | None = None) -> ProcessRegistry:
    return ProcessRegistry(Database(db.url), clock, "duty-host", identity=identity)


async def test_processes_starting_together_on_one_node_get_distinct_slots(db: Database, clock: ManualClock) -> None:
    runs = [registry(db, clock) for _ in range(4)]
    slots = await asyncio.gather(*(r.register() for r in runs))
    assert sorted(slots) == [0, 1, 2, 3]
    assert sorted(r.slot_name for r in runs) == [f"duty-host-{n}" for n in range(4)]
    verdict = await runs[0].verdict()
    assert verdict.dead == frozenset() and verdict.alive == {r.owner for r in runs}


async def test_a_restart_takes_the_slot_of_a_dead_or_stopped_process_and_never_a_live_ones(
    db: Database, clock: ManualClock
) -> None:
    stopped, live, crashed = registry(db, clock), registry(db, clock), registry(db, clock, exited_process())
    for r in (stopped, live, crashed):
        await r.register()
    assert (stopped.slot, live.slot, crashed.slot) == (0, 1, 2)
    await stopped.stop()
    verdict = await live.verdict()
    assert verdict.dead == {stopped.owner, crashed.owner}  # stopped, and gone from this machine
    assert verdict.alive == {live.owner}

    first_back, second_back = registry(db, clock), registry(db, clock)
    assert await first_back.register() == 0  # the stopped one's
    assert await second_back.register() == 2  # the crashed one's, while the live one keeps slot 1
    assert await live.beat()


async def test_elsewhere_only_a_stale_heartbeat_says_a_process_is_dead(db: Database, clock: ManualClock) -> None:
    far = registry(db, clock, ProcessIdentity("another-machine:1", 4242, 1))
    here = registry(db, clock)
    await far.register()
    await here.register()
    clock.advance(seconds=25)
    assert far.owner in (await here.verdict()).alive
    clock.advance(seconds=10)  # 35 s without a beat
    assert far.owner in (await here.verdict()).dead


async def test_a_hung_process_found_dead_registers_again_in_a_free_slot(db: Database, clock: ManualClock) -> None:
    # identities without a machine: only heartbeats tell
    hung = registry(db, clock, ProcessIdentity(None, 4242, 1))
    await hung.register()
    moved: list[int] = []

    async def slot_changed(slot: int) -> None:
        moved.append(slot)

    hung.on_slot_changed = slot_changed
    clock.advance(seconds=31)
    successor = registry(db, clock, ProcessIdentity(None, 4343, 2))
    assert await successor.register() == 0  # the hung one's slot: its heartbeat is stale
    assert not await hung.beat()  # it wakes up, finds itself ended, and takes another slot
    assert hung.slot == 1 and moved == [1]
    verdict = await successor.verdict()
    assert {hung.owner, successor.owner} <= verdict.alive


def test_node_names_are_safe_in_claims_and_client_ids() -> None:
    assert node_name("duty room/1 (县)") == "duty-room-1"
    assert node_name("engine-a") == "engine-a"
