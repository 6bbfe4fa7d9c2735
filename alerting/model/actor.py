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
    ENGINE = "engine"  # one of the engine's own runs ("escalation/<run>", "dispatcher/<run>") doing its job


DEVICE_TEXT = "device"


@dataclass(frozen=True)
class Actor:
    kind: ActorKind
    text: str  # what the audit stores: a person id, "device", "user:<name>", "api:<role>:<digest>", "cli:<name>"

    # Officers come in through three doors, each minting its own text here and nowhere else.
    @classmethod
    def account(cls, username: str) -> Actor:
        """A console account signed in as `username`."""
        return cls(ActorKind.OFFICER, f"user:{username}")

    @classmethod
    def api_key(cls, role: str, digest: str) -> Actor:
        """A caller of the HTTP API, named by its key's role and a digest of the key (never the key)."""
        return cls(ActorKind.OFFICER, f"api:{role}:{digest}")

    @classmethod
    def command_line(cls, what: str) -> Actor:
        """Someone at the server's terminal, running `jiaoying <what>`."""
        return cls(ActorKind.OFFICER, f"cli:{what}")

    @classmethod
    def parse(cls, text: str) -> Actor:
        """The actor a stored text names: the one place that reads the texts above back."""
        if text == DEVICE_TEXT:
            return cls.device()
        if text.partition(":")[0] in ("user", "api", "cli", "duty"):  # "duty:" is `jiaoying ack --by`
            return cls(ActorKind.OFFICER, text)
        if "/" in text:
            return cls(ActorKind.ENGINE, text)
        return cls.person(text)

    @property
    def username(self) -> str | None:
        """The console account, for an actor minted by `account`."""
        kind, _, rest = self.text.partition(":")
        return rest if self.kind is ActorKind.OFFICER and kind == "user" else None

    @property
    def api_role(self) -> str | None:
        """The key's role, for an actor minted by `api_key`."""
        kind, _, rest = self.text.partition(":")
        return rest.partition(":")[0] if self.kind is ActorKind.OFFICER and kind == "api" else None

    @classmethod
    def person(cls, person_id: str) -> Actor:
        return cls(ActorKind.PERSON, person_id)

    @classmethod
    def device(cls) -> Actor:
        return cls(ActorKind.DEVICE, DEVICE_TEXT)

    @classmethod
    def officer(cls, text: str) -> Actor:
        return cls(ActorKind.OFFICER, text)

    @property
    def person_id(self) -> str | None:
        """The directory person this actor is, if any (an officer is named by an account, not a person id)."""
        return self.text if self.kind is ActorKind.PERSON else None
