"""The port through which the console imports directory files (units, people, devices, rosters).

Reading and validating those files is configuration work and lives in config/; the console only
shows what a check found and asks for the same file to be applied. The importer does all of a file
or none of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class RowProblem:
    row: int  # 1-based, as a spreadsheet shows it (the header is row 1)
    field: str
    message: str


@dataclass(frozen=True)
class ImportCheck:
    """What a file holds and what is wrong with it. `ok` means applying it would write `counts`."""

    kind: str  # what the file was read as: units | people | devices | roster
    rows: int
    counts: dict[str, int] = field(default_factory=dict)  # e.g. {"units": 12, "people": 30}
    problems: list[RowProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.rows > 0


class DirectoryImporter(Protocol):
    async def check(self, kind: str, filename: str, content: bytes) -> ImportCheck:
        """Read and validate; writes nothing."""
        ...

    async def apply(self, kind: str, filename: str, content: bytes, *, actor: str) -> ImportCheck:
        """Validate again and write everything in one transaction, or nothing if any row is bad."""
        ...
