"""The hierarchy and its people: read them from CSV, Excel or YAML, check them, import them.

    directory = await load_directory([Path("units.csv"), Path("people.csv")])
    result = await import_directory(db, directory, actor="admin", at=clock.now())

`import_directory` raises `DirectoryError` listing every problem (file, line, field) and writes nothing
when anything is wrong; `validate` gives the same list without a database, `check_import` what an import
would change. People rows add to and update who answers for a unit; `replace=True` replaces the lists.
"""

from __future__ import annotations

from config.directory.check import Existing, Removal, read_existing, validate
from config.directory.model import (
    DeviceRow,
    Directory,
    DirectoryError,
    PersonRow,
    ResponsibilityRow,
    RowError,
    Source,
    UnitRow,
)
from config.directory.parse import load_directory, normalise_phone, person_id_for_phone, read_directory
from config.directory.store import ImportResult, check_import, import_directory

__all__ = [
    "DeviceRow",
    "Directory",
    "DirectoryError",
    "Existing",
    "ImportResult",
    "PersonRow",
    "Removal",
    "ResponsibilityRow",
    "RowError",
    "Source",
    "UnitRow",
    "check_import",
    "import_directory",
    "load_directory",
    "normalise_phone",
    "person_id_for_phone",
    "read_directory",
    "read_existing",
    "validate",
]
