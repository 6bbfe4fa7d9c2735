"""The township tile map: one tile per township of an alert, in code order on a schematic grid (not a map of the
county), coloured by the share that answered, with the silent count on it. The board and the report draw it from
the same numbers they print beside it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from alerting.views.board import TownshipProgress
from alerting.views.report.model import TownshipRow


@dataclass(frozen=True)
class Tile:
    key: str  # the board's key of the township's numbers, which the live board patches
    name: str
    planned: int
    answered: int
    silent: int

    @property
    def band(self) -> str:
        """0 to 4 by the share answered (4 only when everyone did), or "none" when nobody was to be reached; the
        board's script works it out the same way when the numbers move."""
        if not self.planned:
            return "none"
        if self.answered >= self.planned:
            return "4"
        return str(min(3, 4 * self.answered // self.planned))

    @property
    def pct(self) -> int:
        return round(100 * self.answered / self.planned) if self.planned else 0


def board_tiles(alert_id: int, townships: Iterable[TownshipProgress]) -> list[Tile]:
    return [
        Tile(f"{alert_id}.{t.code}", t.name, t.planned, t.answered, t.silent) for t in townships if t.code is not None
    ]


def report_tiles(townships: Iterable[TownshipRow]) -> list[Tile]:
    return [
        Tile(f"report.{t.code}", t.name, t.targets, t.answered + t.answered_for, t.silent)
        for t in townships
        if t.code is not None
    ]
