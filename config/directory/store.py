"""Writing a checked directory into the store: all of it in one transaction, or nothing.

Rows go in with batched upserts (one statement, many parameter sets), so a county of ten thousand
units imports in about as many round trips as a village of ten.

Who answers for a unit is upserted by (unit, person): an import adds people to a unit's list and updates
their role and rank, and leaves the others in place. Only `replace` makes the files' list the unit's whole
list, and the result then names everyone it removed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import structlog
from sqlalchemy import Table, bindparam, delete, insert, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel

from alerting.audit import chain as audit
from alerting.model.domain import UnitKind
from alerting.store.db import Database
from alerting.store.tables import Device, OrgUnit, Person, Responsibility
from config.directory.check import Checked, Existing, Removal, check, read_existing
from config.directory.model import Directory, DirectoryError, PersonRow, UnitRow

log = structlog.get_logger()

_DEPTH = {UnitKind.COUNTY: 0, UnitKind.TOWNSHIP: 1, UnitKind.VILLAGE: 2, UnitKind.GRID: 3}
_Row = TypeVar("_Row")
_IN_CHUNK = 500  # codes per IN (...) list; stays far below every backend's parameter limit


@dataclass(frozen=True)
class ImportResult:
    """What an import did; 'updated' rows already existed and now say what the files say."""

    units_created: int
    units_updated: int
    people_created: int
    people_updated: int
    responsibilities: int  # rows of the files written: added to a unit's list, or updating someone on it
    devices_created: int
    devices_updated: int
    paths_moved: int  # units only the database knew whose path changed because an ancestor moved
    responsibilities_added: int = 0
    responsibilities_updated: int = 0
    responsibilities_removed: int = 0  # only with replace: listed by name in `removed`
    removed: tuple[Removal, ...] = field(default=())

    def counts(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if isinstance(v, int)}

    def __str__(self) -> str:
        """One sentence a person reads: what was created, updated and removed, leaving out what did not happen."""
        parts = [
            _changed("units", self.units_created, self.units_updated),
            _changed("people", self.people_created, self.people_updated),
            _changed("devices", self.devices_created, self.devices_updated),
            _counted(
                "responsibilities",
                added=self.responsibilities_added,
                updated=self.responsibilities_updated,
                removed=self.responsibilities_removed,
            ),
        ]
        if self.paths_moved:
            parts.append(f"{self.paths_moved:,} units moved under a new parent")
        said = "; ".join(p for p in parts if p)
        return said or "nothing changed"


def _changed(what: str, created: int, updated: int) -> str:
    return _counted(what, created=created, updated=updated)


def _counted(what: str, **counts: int) -> str:
    done = [f"{n:,} {word}" for word, n in counts.items() if n]
    return f"{what}: {', '.join(done)}" if done else ""


def summarise(directory: Directory, existing: Existing, checked: Checked) -> ImportResult:
    """What importing a checked directory writes, counted before anything is written (the check step shows it)."""
    units = {u.code for u in directory.units}
    people = {p.id for p in directory.people}
    devices = {d.id for d in directory.devices}
    stored = {(code, d.person_id) for code, rows in existing.duties.items() for d in rows}
    duties = {(r.unit_code, r.person_id) for r in directory.responsibilities}
    moved = sum(
        1
        for code, unit in existing.units.items()
        if code not in units and (path := checked.paths.get(code)) is not None and path != unit.path
    )
    return ImportResult(
        units_created=len(units - set(existing.units)),
        units_updated=len(units & set(existing.units)),
        people_created=len(people - set(existing.phones)),
        people_updated=len(people & set(existing.phones)),
        responsibilities=len(directory.responsibilities),
        devices_created=len(devices - existing.device_ids),
        devices_updated=len(devices & existing.device_ids),
        paths_moved=moved,
        responsibilities_added=len(duties - stored),
        responsibilities_updated=len(duties & stored),
        responsibilities_removed=len(checked.removals),
        removed=tuple(checked.removals),
    )


async def check_import(db: Database, directory: Directory, *, replace: bool = False) -> ImportResult:
    """What `import_directory` would write, and with `replace` whom it would remove; writes nothing.
    Raises DirectoryError as it would."""
    async with db.session() as session:
        existing = await read_existing(session)
    checked = await asyncio.to_thread(lambda: check(directory, existing, replace=replace))
    if checked.errors:
        raise DirectoryError(checked.errors)
    return summarise(directory, existing, checked)


async def import_directory(
    db: Database,
    directory: Directory,
    *,
    actor: str,
    at: datetime,
    files: Sequence[str] = (),
    replace: bool = False,
) -> ImportResult:
    """Check the directory against the database and write it, in one transaction.

    Raises DirectoryError listing every problem (and having written nothing) when anything is wrong.
    Units are upserted by code, people by id, devices by id, responsibilities by (unit, person).
    With `replace`, every unit that appears in the people rows gets exactly the files' list: whoever else
    answered for it is removed, and the result and the audit name them. Nothing is deleted otherwise.
    `files` names the uploaded files in the audit entry, for an import that did not come from a path.
    """
    async with db.session() as session:
        existing = await read_existing(session)
        # checking ten thousand rows is CPU work: keep it off the event loop
        checked = await asyncio.to_thread(lambda: check(directory, existing, replace=replace))
        if checked.errors:
            log.warning("directory.rejected", problems=len(checked.errors))
            raise DirectoryError(checked.errors)

        units = sorted(_first(directory.units, lambda u: u.code), key=lambda u: (_DEPTH[u.kind], u.code))
        people = _first(directory.people, lambda p: p.id)
        devices = _first(directory.devices, lambda d: d.id)
        in_files = {u.code for u in units}
        moved_elsewhere = {
            code: path
            for code, stored in existing.units.items()
            if code not in in_files and (path := checked.paths.get(code)) is not None and path != stored.path
        }

        dialect = db.engine.dialect.name
        await _upsert(
            session,
            dialect,
            OrgUnit,
            "code",
            [_unit_values(u, checked.paths[u.code]) for u in units],
        )
        if moved_elsewhere:
            units_table = _table(OrgUnit)
            await session.execute(
                update(units_table).where(units_table.c.code == bindparam("b_code")).values(path=bindparam("b_path")),
                [{"b_code": code, "b_path": path} for code, path in moved_elsewhere.items()],
            )
        await _upsert(session, dialect, Person, "id", [_person_values(p) for p in people], insert_only={"active": True})
        duties = _table(Responsibility)
        rows = [
            {"unit_code": r.unit_code, "person_id": r.person_id, "role": r.role.value, "rank": r.rank}
            for r in directory.responsibilities
        ]
        if replace:
            replaced = sorted({r.unit_code for r in directory.responsibilities})
            for chunk in _chunks(replaced, _IN_CHUNK):
                await session.execute(delete(duties).where(duties.c.unit_code.in_(chunk)))
            if rows:
                await session.execute(insert(duties), rows)
        else:
            await _upsert(session, dialect, Responsibility, ("unit_code", "person_id"), rows)
        await _upsert(
            session,
            dialect,
            Device,
            "id",
            [{"id": d.id, "unit_code": d.unit_code, "kind": d.kind.value, "name": d.name} for d in devices],
        )

        result = summarise(directory, existing, checked)
        data: dict[str, Any] = {**result.counts(), **({"files": list(files)} if files else {})}
        if result.removed:
            data["removed"] = [str(r) for r in result.removed]
        await audit.append(session, [audit.Entry(kind="directory.imported", actor=actor, at=at, data=data)])
    log.info("directory.imported", actor=actor, **result.counts())
    return result


def _first(rows: Iterable[_Row], key: Callable[[_Row], str]) -> list[_Row]:
    """One row per key, the first; the check has made sure repeated rows agree."""
    seen: dict[str, _Row] = {}
    for row in rows:
        seen.setdefault(key(row), row)
    return list(seen.values())


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _unit_values(u: UnitRow, path: str) -> dict[str, Any]:
    return {"code": u.code, "name": u.name, "kind": u.kind.value, "parent_code": u.parent_code, "path": path}


def _person_values(p: PersonRow) -> dict[str, Any]:
    return {"id": p.id, "name": p.name, "phone": p.phone, "wecom_userid": p.wecom_userid, "email": p.email}


def _table(model: type[SQLModel]) -> Table:
    """The Core table: statements on it run as plain executemany, without the ORM's per-row bookkeeping."""
    return SQLModel.metadata.tables[str(model.__tablename__)]


async def _upsert(
    session: AsyncSession,
    dialect: str,
    model: type[SQLModel],
    key: str | tuple[str, ...],
    rows: list[dict[str, Any]],
    insert_only: dict[str, Any] | None = None,
) -> None:
    """Insert rows, or update the given columns of those whose key exists. Columns not given are left alone."""
    if not rows:
        return
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(_table(model))
    elif dialect == "sqlite":
        stmt = sqlite.insert(_table(model))
    else:
        raise NotImplementedError(f"directory import supports SQLite and PostgreSQL, not {dialect}")
    keys = [key] if isinstance(key, str) else list(key)
    columns = [c for c in rows[0] if c not in keys]
    stmt = stmt.on_conflict_do_update(index_elements=keys, set_={c: stmt.excluded[c] for c in columns})
    extra = insert_only or {}
    await session.execute(stmt, [{**extra, **row} for row in rows])
