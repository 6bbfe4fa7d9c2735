"""Who did something the audit records: minted once, where the action comes in, and carried as a value.

The audit and the acknowledgement rows store `Actor.text`; nothing downstream guesses the kind of actor back
from a string's shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ActorKind(StrEnum):
    PERSON = "person"  # a responsible person answering for themselves (link, reply, key press, button)
    DEVICE = "device"  # a siren or a broadcast zone confirming
    OFFICER = "officer"  # a signed-in account, an API key or the command line, acting on someone's behalf


@dataclass(frozen=True)
class Actor:
    kind: ActorKind
    text: str  # what the audit stores: a person id, "device", "user:<name>", "api:<role>:<digest>", "cli:<name>"

    @classmethod
    def person(cls, person_id: str) -> Actor:
        return cls(ActorKind.PERSON, person_id)

    @classmethod
    def device(cls) -> Actor:
        return cls(ActorKind.DEVICE, "device")

    @classmethod
    def officer(cls, text: str) -> Actor:
        return cls(ActorKind.OFFICER, text)

    @property
    def person_id(self) -> str | None:
        """The directory person this actor is, if any (an officer is named by an account, not a person id)."""
        return self.text if self.kind is ActorKind.PERSON else None
