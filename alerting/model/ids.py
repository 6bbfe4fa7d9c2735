"""Application-assigned ids, so bulk inserts need no round trip to learn them."""

from __future__ import annotations

import uuid


def new_id() -> str:
    return uuid.uuid4().hex
