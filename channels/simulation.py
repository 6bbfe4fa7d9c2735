"""Simulated recipients for the demo: who answers, at which step, after how long. Seeded, so runs repeat.

Each person's behaviour comes from a hash of the seed and their id, never from the order messages
arrive in, so the same sample and seed always close the loop the same way and the demo can check
the outcome against `predict`.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from dataclasses import dataclass

from alerting.clock import Clock
from alerting.domain import ChannelKind, Purpose
from alerting.port import Answer, EventSink, OutboundMessage


@dataclass(frozen=True)
class Behaviour:
    answers_at_step: int | None  # 0: the first wave, 1: the redial, None: never answers
    delay_s: float


class AnswerSimulator:
    def __init__(
        self,
        clock: Clock,
        seed: int,
        *,
        never_share: float = 0.04,
        redial_share: float = 0.12,
        helper_share: float = 0.6,
        max_delay_s: float = 150.0,
        last_step: int = 5,
    ) -> None:
        self.clock, self.seed = clock, seed
        self.never_share, self.redial_share, self.helper_share = never_share, redial_share, helper_share
        self.max_delay_s, self.last_step = max_delay_s, last_step
        self._answered: set[tuple[object, ...]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def _rng(self, *parts: object) -> random.Random:
        digest = hashlib.sha256("|".join(str(p) for p in (self.seed, *parts)).encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))  # noqa: S311 (simulation, not secrets)

    def behaviour(self, person_id: str) -> Behaviour:
        rng = self._rng("person", person_id)
        roll = rng.random()
        step = None if roll < self.never_share else 1 if roll < self.never_share + self.redial_share else 0
        return Behaviour(step, rng.uniform(0.05, 1.0) * self.max_delay_s)

    def helper_answers(self, person_id: str, about: str, step: int, last_step: bool) -> bool:
        """Whether someone reached by an escalation answers for the silent one. The last level always does."""
        return last_step or self._rng("helper", person_id, about, step).random() < self.helper_share

    def on_sent(self, message: OutboundMessage, events: EventSink) -> None:
        person = message.address.person_id
        if message.purpose is Purpose.LIFT:
            return
        if person is None:  # a broadcast gateway confirms playback of what it was given
            if message.channel is ChannelKind.BROADCAST:
                self._schedule(("broadcast", message.delivery_id), 0.05 * self.max_delay_s, events, message, {})
            return
        if message.purpose is Purpose.TASK:  # a village head always does the task and reports what was done
            delay = self._rng("task-delay", person, message.delivery_id).uniform(0.2, 1.0) * self.max_delay_s
        elif message.about is None:
            b = self.behaviour(person)
            if b.answers_at_step != message.step:
                return
            delay = b.delay_s
        elif self.helper_answers(person, message.about, message.step, message.step >= self.last_step):
            delay = self._rng("delay", person, message.about, message.step).uniform(0.05, 0.5) * self.max_delay_s
        else:
            return
        feedback = self._task_feedback(person) if message.purpose is Purpose.TASK else {}
        # several channels carry the same step; a person answers once
        self._schedule((message.alert_id, person, message.step, message.about), delay, events, message, feedback)

    def _schedule(
        self,
        key: tuple[object, ...],
        delay: float,
        events: EventSink,
        message: OutboundMessage,
        feedback: dict[str, int],
    ) -> None:
        if key in self._answered:
            return
        self._answered.add(key)
        task = asyncio.create_task(self._later(delay, events, message, feedback))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _task_feedback(self, person_id: str) -> dict[str, int]:
        rng = self._rng("task", person_id)
        households = rng.randint(8, 60)
        return {"households": households, "moved": rng.randint(0, households * 3)}

    async def _later(self, delay: float, events: EventSink, message: OutboundMessage, feedback: dict[str, int]) -> None:
        await self.clock.sleep(delay)
        await events(
            Answer(channel=message.channel, at=self.clock.now(), delivery_id=message.delivery_id, feedback=feedback)
        )

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
