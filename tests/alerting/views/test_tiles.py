"""The township tile map's colour bands: by the share answered, full green only when everyone answered."""

from __future__ import annotations

import pytest

from alerting.views.board import TownshipProgress
from alerting.views.report.model import TownshipRow
from alerting.views.tiles import Tile, board_tiles, report_tiles


@pytest.mark.parametrize(
    ("planned", "answered", "band"),
    [(0, 0, "none"), (10, 0, "0"), (10, 2, "0"), (10, 3, "1"), (10, 5, "2"), (10, 7, "2"), (10, 8, "3"),
     (100, 99, "3"), (10, 10, "4")],
)  # fmt: skip
def test_a_tile_is_banded_by_the_share_answered(planned: int, answered: int, band: str) -> None:
    assert Tile("k", "凤凰镇", planned, answered, planned - answered).band == band


def test_the_board_and_the_report_draw_townships_not_the_county_level() -> None:
    board = [
        TownshipProgress(code=None, name="县级", planned=3, answered=1, silent=2),
        TownshipProgress(code="500238101", name="凤凰镇", planned=8, answered=6, silent=2),
    ]
    assert board_tiles(7, board) == [Tile("7.500238101", "凤凰镇", 8, 6, 2)]
    report = [
        TownshipRow(code=None, name="县级", targets=3),
        TownshipRow(code="500238102", name="宁厂镇", targets=5, answered=2, answered_for=1, silent=2),
    ]
    [tile] = report_tiles(report)
    assert (tile.name, tile.planned, tile.answered, tile.silent, tile.band) == ("宁厂镇", 5, 3, 2, "2")
