"""Checked uploads waiting for the admin's 确认导入, kept between the two requests of a console import.

The bytes stay on the server under a random token, bound to the account that uploaded them, for a
short while; the confirmation names only the token, so what is applied is exactly what was checked
(and the importer checks it again before writing). Only files whose check came out clean are kept.
The administrator's choice to replace the units' lists of responsible people is kept with the bytes: the
check named who that would remove, and the confirmation cannot change the choice.

They live in this process's memory. With several `jiaoying serve` processes behind a balancer, the
confirmation may reach a process that never saw the upload: it then says the upload has expired and
asks for it again, which is safe but annoying; such a deployment needs sticky sessions for the console.
A restart forgets them the same way.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

from fastapi import Request

TTL_SECONDS = 15 * 60
MAX_HELD_BYTES = 64 * 1024 * 1024  # the oldest go first beyond this


@dataclass(frozen=True)
class PendingUpload:
    actor: str
    kind: str
    filename: str
    content: bytes
    expires: float  # time.monotonic(); a cache lifetime, not a time anything is recorded at
    replace: bool = False  # the file's lists replace those of the units it names, as checked

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


class PendingUploads:
    def __init__(self) -> None:
        self._held: OrderedDict[str, PendingUpload] = OrderedDict()

    def put(self, actor: str, kind: str, filename: str, content: bytes, *, replace: bool = False) -> str:
        self._expire()
        token = secrets.token_urlsafe(18)
        expires = time.monotonic() + TTL_SECONDS
        self._held[token] = PendingUpload(actor, kind, filename, content, expires, replace)
        while sum(len(p.content) for p in self._held.values()) > MAX_HELD_BYTES and len(self._held) > 1:
            self._held.popitem(last=False)
        return token

    def take(self, token: str, actor: str) -> PendingUpload | None:
        """The upload, once: a second confirmation of the same token finds nothing."""
        self._expire()
        found = self._held.get(token)
        if found is None or found.actor != actor:
            return None
        del self._held[token]
        return found

    def _expire(self) -> None:
        now = time.monotonic()
        for token in [t for t, p in self._held.items() if p.expires <= now]:
            del self._held[token]


def pending_uploads(request: Request) -> PendingUploads:
    """The app's store, made on first use."""
    store = getattr(request.app.state, "directory_uploads", None)
    if not isinstance(store, PendingUploads):
        store = PendingUploads()
        request.app.state.directory_uploads = store
    return store
