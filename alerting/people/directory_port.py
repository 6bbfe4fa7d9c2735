"""The port through which the console and the API import directory files (units, people, devices, rosters).

Reading and validating those files is configuration work and lives in config/; the core only shows
what a check found and asks for the same file to be applied. The importer does all of a file or none
of it, and checks it again when applying, since the directory may have changed in between.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

# what a file may be imported as, with the words the console shows
IMPORT_KINDS: dict[str, str] = {
    "people": "人员（网格员、村负责人、值班员及其负责单位）",
    "units": "单位（区县、乡镇、村社区、网格）",
    "devices": "设备（预警器、应急广播、卫星终端）",
    "directory": "名录工作簿（单位、人员、设备多个工作表，按表头识别）",
    "roster": "值班表（乡镇和县的值班班次）",
}

# what the counts of a check or an import mean, in the words the console shows
COUNT_LABELS: dict[str, str] = {
    "units_created": "新增单位",
    "units_updated": "更新单位",
    "people_created": "新增人员",
    "people_updated": "更新人员",
    "responsibilities": "文件中的负责关系",
    "responsibilities_added": "新增负责关系",
    "responsibilities_updated": "更新负责关系（职责或顺位）",
    "responsibilities_removed": "移除的负责关系（替换）",
    "devices_created": "新增设备",
    "devices_updated": "更新设备",
    "paths_moved": "随上级调整层级的单位",
    "shifts": "班次",
    "units": "涉及乡镇/区县",
    "replaced": "被替换的已有班次",
    "trimmed": "被截短的已有班次",
}

MAX_IMPORT_BYTES = 10 * 1024 * 1024  # a county's whole directory as CSV is well under 1 MB


@dataclass(frozen=True)
class RowProblem:
    row: int  # 1-based, as a spreadsheet or editor shows it (the header is row 1); 0 = the whole file
    field: str  # the column, English key and Chinese header; "" when it is about the row or file
    message: str
    sheet: str | None = None  # the worksheet, for workbooks

    @property
    def where(self) -> str:
        place = "整个文件" if self.row <= 0 else f"第 {self.row} 行"
        return f"{self.sheet} {place}" if self.sheet else place


@dataclass(frozen=True)
class ImportCheck:
    """What a file holds and what is wrong with it. `ok` means applying it would write `counts`."""

    kind: str  # what the file was read as: one of IMPORT_KINDS
    filename: str
    rows: int  # data rows read, good and bad
    counts: dict[str, int] = field(default_factory=dict)  # e.g. {"units_created": 12, "people_updated": 30}
    problems: list[RowProblem] = field(default_factory=list)
    warnings: list[RowProblem] = field(default_factory=list)  # worth a look, do not stop the import
    applied: bool = False  # True once written
    # who answered for a unit and is (or, in a check, would be) taken off its list; only when replacing
    removals: list[str] = field(default_factory=list)
    replace: bool = False  # the units named in the file get exactly the file's lists

    @property
    def ok(self) -> bool:
        return not self.problems and self.rows > 0


class DirectoryImporter(Protocol):
    async def check(self, kind: str, filename: str, content: bytes, *, replace: bool = False) -> ImportCheck:
        """Read and validate; writes nothing. `replace`: see `apply`; the check lists who would be removed."""
        ...

    async def apply(
        self, kind: str, filename: str, content: bytes, *, actor: str, replace: bool = False
    ) -> ImportCheck:
        """Validate again and write everything in one audited transaction; with any problem, write nothing
        and return the check with its problems (`applied` False). People rows add to the lists of who answers
        for a unit, or update them; with `replace`, each unit they name gets exactly the file's list."""
        ...
