"""Simulated recipients for the demo: who answers, at which step, after how long. Seeded, so runs repeat.

Each person's behaviour comes from a hash of the seed and their id, never from the order messages
arrive in, so the same sample and seed always close the loop the same way and the demo can check
the outcome against `predict`.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from alerting.answer.events import Answer, EventSink
from alerting.deliver.port import OutboundMessage
from alerting.model.clock import Clock
from alerting.model.domain import ChannelKind, Purpose


@dataclass(frozen=True)
class Decision:
    key: tuple[object, ...]
    delay_s: float
    feedback: dict[str, int]


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

    def decide(
        self,
        *,
        alert_id: int,
        delivery_id: str,
        purpose: Purpose,
        channel: ChannelKind,
        person_id: str | None,
        step: int,
        about: str | None,
    ) -> Decision | None:
        """Whether this message gets answered, after how many clock seconds, and with what feedback."""
        if purpose is Purpose.LIFT:
            return None
        if person_id is None:  # a broadcast gateway confirms playback of what it was given
            if channel is ChannelKind.BROADCAST:
                return Decision(("broadcast", delivery_id), 0.05 * self.max_delay_s, {})
            return None
        if purpose is Purpose.TASK:  # a village head always does the task and reports what was done
            delay = self._rng("task-delay", person_id, delivery_id).uniform(0.2, 1.0) * self.max_delay_s
            return Decision((alert_id, person_id, step, about), delay, self._task_feedback(person_id))
        if about is None:
            b = self.behaviour(person_id)
            if b.answers_at_step != step:
                return None
            delay = b.delay_s
        elif self.helper_answers(person_id, about, step, step >= self.last_step):
            delay = self._rng("delay", person_id, about, step).uniform(0.05, 0.5) * self.max_delay_s
        else:
            return None
        # several channels carry the same step; a person answers once
        return Decision((alert_id, person_id, step, about), delay, {})

    def claim(self, decision: Decision) -> bool:
        """True the first time a decision's key comes up: the one message of a step that gets answered."""
        if decision.key in self._answered:
            return False
        self._answered.add(decision.key)
        return True

    def on_sent(self, message: OutboundMessage, events: EventSink) -> None:
        decision = self.decide(
            alert_id=message.alert_id,
            delivery_id=message.delivery_id,
            purpose=message.purpose,
            channel=message.channel,
            person_id=message.address.person_id,
            step=message.step,
            about=message.about,
        )
        if decision is not None and self.claim(decision):
            self.later(decision.delay_s, lambda: self._answer(events, message, decision.feedback))

    def later(self, delay_s: float, action: Callable[[], Awaitable[None]]) -> None:
        """Run `action` after `delay_s` seconds of the simulation's clock."""

        async def run() -> None:
            await self.clock.sleep(delay_s)
            await action()

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, events: EventSink, message: OutboundMessage, feedback: dict[str, int]) -> None:
        await events(
            Answer(channel=message.channel, at=self.clock.now(), delivery_id=message.delivery_id, feedback=feedback)
        )

    def _task_feedback(self, person_id: str) -> dict[str, int]:
        rng = self._rng("task", person_id)
        households = rng.randint(8, 60)
        return {"households": households, "moved": rng.randint(0, households * 3)}

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
