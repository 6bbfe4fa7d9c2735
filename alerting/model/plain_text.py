"""What a person's words may hold: the fields a warning is written in, checked once for the API, console and CLI.

A control character in a title does not show on a phone but travels to every recipient: a NUL cuts an SMS short at
some gateways and PostgreSQL refuses to store one, an escape sequence rewrites a terminal, a lone surrogate cannot be
encoded at all. A text of spaces would be sent as a blank warning. Both are refused where they come in.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator

# a text keeps its paragraphs; a tab typed into a form is harmless
TEXT_ALLOWED = frozenset("\n\r\t")


@dataclass(frozen=True)
class BadCharacter:
    position: int  # 1-based, as a person counts
    code: str  # U+0000
    line_break: bool

    def __str__(self) -> str:
        what = "a line break" if self.line_break else f"the control character {self.code}"
        return f"{what} at position {self.position}"


def bad_character(value: str, *, multiline: bool) -> BadCharacter | None:
    """The first character `value` may not hold, or None when every one is fine."""
    allowed = TEXT_ALLOWED if multiline else frozenset()
    for at, char in enumerate(value, start=1):
        # Cc: C0, DEL and C1 controls; Cs: half of a surrogate pair, which no encoding can write alone
        if char not in allowed and unicodedata.category(char) in ("Cc", "Cs"):
            return BadCharacter(at, f"U+{ord(char):04X}", char in "\n\r")
    return None


def _line(value: str) -> str:
    if (found := bad_character(value, multiline=False)) is not None:
        raise ValueError(f"must be one line of printable text; it has {found}")
    return value


def _text(value: str) -> str:
    if (found := bad_character(value, multiline=True)) is not None:
        raise ValueError(f"must be printable text (line breaks are fine); it has {found}")
    return value


def _filled(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank: it would be sent to everyone as it is")
    return value


def _blank_or_filled(value: str) -> str:
    # leaving a field out is fine; a few spaces are not something anyone meant to send
    return value if value == "" else _filled(value)


Line = Annotated[str, AfterValidator(_line)]
"""One line, e.g. a title, a hazard, a reason: no control characters at all."""
FilledLine = Annotated[str, AfterValidator(_line), AfterValidator(_filled)]
"""One line with something in it besides spaces."""
Text = Annotated[str, AfterValidator(_text), AfterValidator(_blank_or_filled)]
"""Paragraphs, e.g. instructions: line breaks and tabs, no other control characters; empty, or not blank."""
FilledText = Annotated[str, AfterValidator(_text), AfterValidator(_filled)]
"""Paragraphs with something in them besides spaces, e.g. the warning itself."""
