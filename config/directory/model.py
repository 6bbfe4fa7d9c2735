"""The directory as read from files: units, people, who answers for which unit, and devices.

Every row keeps where it came from, so a problem found later can still name the file, line and field.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from alerting.model.domain import DeviceKind, Role, UnitKind


@dataclass(frozen=True)
class Source:
    """Where a row was read: a file and its line (CSV, YAML) or a sheet and its row (XLSX)."""

    file: str
    line: int
    sheet: str | None = None

    def __str__(self) -> str:
        if self.line <= 0:  # about the whole file
            return self.file
        if self.sheet is not None:
            return f"{self.file} [{self.sheet}] row {self.line}"
        return f"{self.file} line {self.line}"


@dataclass(frozen=True)
class UnitRow:
    code: str
    name: str
    kind: UnitKind
    parent_code: str | None
    source: Source | None = None


@dataclass(frozen=True)
class PersonRow:
    """One person as one row stated them; the same id may come on several rows, which must agree."""

    id: str
    name: str
    phone: str | None  # E.164
    wecom_userid: str | None = None
    email: str | None = None
    source: Source | None = None

    def details(self) -> tuple[str, str | None, str | None, str | None]:
        return (self.name, self.phone, self.wecom_userid, self.email)


@dataclass(frozen=True)
class ResponsibilityRow:
    """A person answering for a unit: rank 0 is the primary, 1 and up the backups in order."""

    unit_code: str
    person_id: str
    role: Role
    rank: int = 0
    source: Source | None = None


@dataclass(frozen=True)
class DeviceRow:
    id: str
    unit_code: str
    kind: DeviceKind
    name: str
    source: Source | None = None


@dataclass(frozen=True)
class RowError:
    """One problem, named well enough that whoever keeps the spreadsheet can find and fix it."""

    source: Source | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = str(self.source) if self.source is not None else "database 数据库"
        if self.field:
            where += f", {self.field}"
        return f"{where}: {self.message}"


def _sort_key(e: RowError) -> tuple[int, str, str, int]:
    # problems without a source (found in the database) go last
    if e.source is None:
        return (1, "", "", 0)
    return (0, e.source.file, e.source.sheet or "", e.source.line)


class DirectoryError(Exception):
    """The directory cannot be imported; `errors` lists every problem found, not just the first."""

    def __init__(self, errors: Iterable[RowError]) -> None:
        self.errors = sorted(errors, key=_sort_key)
        super().__init__(str(self))

    def __str__(self) -> str:
        head = (
            f"名录有 {len(self.errors)} 处错误，未导入任何数据 / {len(self.errors)} problem(s), nothing was imported:"
        )
        return "\n".join([head, *(f"  - {e}" for e in self.errors)])


@dataclass(frozen=True)
class Directory:
    """What the files said. `problems` holds rows that could not be read at all; they are not in the lists.

    `unreadable_units` are codes of unit rows left out because of such problems, so that rows referring
    to them are not reported a second time as referring to an unknown unit.
    """

    units: tuple[UnitRow, ...] = ()
    people: tuple[PersonRow, ...] = ()
    responsibilities: tuple[ResponsibilityRow, ...] = ()
    devices: tuple[DeviceRow, ...] = ()
    problems: tuple[RowError, ...] = ()
    unreadable_units: frozenset[str] = field(default_factory=frozenset)
