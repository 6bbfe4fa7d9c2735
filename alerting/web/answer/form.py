"""The feedback a grid worker may send with 收到: people moved, households reached, help needed, a note.

Keys match what the report reads (alerting.report.feedback_text): moved, households, help_needed, note.
A manual task (鸣锣吹哨, 敲门入户) is answered with what was done: households reached and people moved are
required then (0 is an answer), since the report sums them per village and a blank would read as nobody.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_MOVED = 100_000  # more than any township has people: a larger number is a typo
MAX_HOUSEHOLDS = 20_000
MAX_NOTE = 200


@dataclass
class FeedbackForm:
    moved: str = ""
    households: str = ""
    help_needed: bool = False
    note: str = ""
    errors: list[str] = field(default_factory=list)
    feedback: dict[str, Any] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return not self.errors


def _count(raw: str, what: str, upper: int, errors: list[str], *, required: bool = False) -> int | None:
    raw = raw.strip()
    if not raw:
        if required:
            errors.append(f"请填写{what}（没有请填 0）")
        return None
    try:
        n = int(raw)  # int() also reads full-width digits, which Chinese phone keyboards often type
    except ValueError:
        errors.append(f"{what}请填写整数（0 到 {upper}），您填的是“{raw[:20]}”")
        return None
    if not 0 <= n <= upper:
        errors.append(f"{what}应在 0 到 {upper} 之间，您填的是 {n}")
        return None
    return n


def parse_feedback(form: Mapping[str, Any], *, task: bool, answering: bool = False) -> FeedbackForm:
    """Read and check the form; the errors are sentences the person can act on. `answering` a task (not adding
    to an answer given before) requires its counts."""
    f = FeedbackForm(
        moved=str(form.get("moved", ""))[:40],
        households=str(form.get("households", ""))[:40] if task else "",
        help_needed=str(form.get("help_needed", "")) in ("1", "on", "yes", "true"),
        note=str(form.get("note", "")).strip(),
    )
    required = task and answering
    households = _count(f.households, "入户户数", MAX_HOUSEHOLDS, f.errors, required=required) if task else None
    moved = _count(f.moved, "人员转移人数", MAX_MOVED, f.errors, required=required)
    if len(f.note) > MAX_NOTE:
        f.errors.append(f"情况说明最多 {MAX_NOTE} 字，现在是 {len(f.note)} 字")
    if f.errors:
        return f
    if moved is not None:
        f.feedback["moved"] = moved
    if households is not None:
        f.feedback["households"] = households
    if f.help_needed:
        f.feedback["help_needed"] = True
    if f.note:
        f.feedback["note"] = f.note
    return f
