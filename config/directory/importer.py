"""The console's and the API's file import, on top of the loaders `jiaoying import` and `jiaoying roster import` use.

An upload arrives as bytes and a name. The loaders read paths (they name the file in every problem
and pick the reader by its suffix), so the bytes are written under the upload's own name into a
private temporary directory that is gone again before the check returns.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterable
from pathlib import Path

import structlog

from alerting.model.clock import Clock
from alerting.people.directory_port import IMPORT_KINDS, ImportCheck, RowProblem
from alerting.store.db import Database
from config.directory.check import check, read_existing
from config.directory.model import Directory, DirectoryError, RowError, Source
from config.directory.parse import read_directory
from config.directory.rosters import (
    Roster,
    RosterError,
    check_roster,
    import_roster,
    read_known,
    read_roster,
    spans_of,
    stored_in_spans,
)
from config.directory.store import import_directory, summarise

log = structlog.get_logger()

_SUFFIXES = {
    "roster": (".csv", ".xlsx", ".xlsm"),
    "directory": (".csv", ".xlsx", ".xlsm", ".yaml", ".yml"),
}
_TABLE_LABEL = {"units": "单位表", "people": "人员表", "devices": "设备表"}
_NAME_LIMIT = 120


def safe_name(filename: str) -> str:
    """The upload's own name without any directory part, so it can name the file in messages and be written."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable() and ch not in '<>:"|?*').strip().lstrip(".")
    if len(base) > _NAME_LIMIT:
        stem, dot, suffix = base.rpartition(".")
        base = stem[: _NAME_LIMIT - len(suffix) - 1] + dot + suffix if dot and len(suffix) <= 5 else base[:_NAME_LIMIT]
    return base or "upload"


def _problem(e: RowError) -> RowProblem:
    s = e.source
    if s is None:  # found in what the database already holds
        return RowProblem(0, e.field or "", "数据库中已有的数据 " + e.message)
    return RowProblem(max(s.line, 0), e.field or "", e.message, s.sheet)


def _file_problem(message: str, field: str = "file 文件") -> RowProblem:
    return RowProblem(0, field, message)


def _rows(good: Iterable[Source | None], problems: Iterable[RowError]) -> int:
    """Data rows read, counting a row once however many problems it has."""
    seen = {s for s in good if s is not None}
    seen |= {e.source for e in problems if e.source is not None and e.source.line > 0}
    return len(seen)


def _read_blocking(kind: str, name: str, content: bytes) -> Directory | Roster:
    with tempfile.TemporaryDirectory(prefix="jiaoying-import-") as folder:
        path = Path(folder) / name
        path.write_bytes(content)
        return read_roster([path]) if kind == "roster" else read_directory([path])


class FileImporter:
    """Implements alerting.directory_port.DirectoryImporter for CSV, XLSX (and YAML directory) uploads."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def check(self, kind: str, filename: str, content: bytes, *, replace: bool = False) -> ImportCheck:
        name = safe_name(filename)
        refused = self._refuse(kind, name, content)
        if refused is not None:
            return refused
        read = await asyncio.to_thread(_read_blocking, kind, name, content)
        if isinstance(read, Roster):
            return await self._check_roster(name, read)
        return await self._check_directory(kind, name, read, replace)

    async def apply(
        self, kind: str, filename: str, content: bytes, *, actor: str, replace: bool = False
    ) -> ImportCheck:
        name = safe_name(filename)
        refused = self._refuse(kind, name, content)
        if refused is not None:
            return refused
        read = await asyncio.to_thread(_read_blocking, kind, name, content)
        at = self.clock.now()
        if isinstance(read, Roster):
            rows = _rows((s.source for s in read.shifts), read.problems)
            try:
                done = await import_roster(self.db, read, actor=actor, at=at)
            except RosterError as exc:
                return ImportCheck(kind, name, rows, problems=[_problem(e) for e in exc.errors])
            warnings = [_problem(w) for w in done.warnings]
            counts = {k: v for k, v in done.counts().items() if k != "warnings"}
            return ImportCheck(
                kind, name, rows, counts, warnings=warnings, applied=True, removals=list(done.removed), replace=True
            )
        rows = _rows(_directory_sources(read), read.problems)
        mismatch = _kind_mismatch(kind, read)
        if mismatch:
            return ImportCheck(kind, name, rows, problems=mismatch)
        try:
            result = await import_directory(self.db, read, actor=actor, at=at, files=[name], replace=replace)
        except DirectoryError as exc:
            return ImportCheck(kind, name, rows, problems=[_problem(e) for e in exc.errors])
        removed = [str(r) for r in result.removed]
        return ImportCheck(kind, name, rows, result.counts(), applied=True, removals=removed, replace=replace)

    def _refuse(self, kind: str, name: str, content: bytes) -> ImportCheck | None:
        """A check that stops before reading: an unknown kind, a suffix no reader takes, an empty file."""
        if kind not in IMPORT_KINDS:
            choices = ", ".join(IMPORT_KINDS)
            return ImportCheck(
                kind, name, 0, problems=[_file_problem(f"未知的导入类型 {kind!r}（可选 {choices}）", "kind")]
            )
        suffixes = _SUFFIXES["roster" if kind == "roster" else "directory"]
        if not name.lower().endswith(suffixes):
            wanted = "、".join(suffixes)
            return ImportCheck(kind, name, 0, problems=[_file_problem(f"不支持的文件类型，请上传 {wanted} 文件")])
        if not content.strip():
            return ImportCheck(kind, name, 0, problems=[_file_problem("文件为空 the file is empty")])
        return None

    async def _check_directory(self, kind: str, name: str, directory: Directory, replace: bool) -> ImportCheck:
        rows = _rows(_directory_sources(directory), directory.problems)
        async with self.db.session() as s:
            existing = await read_existing(s)
        checked = await asyncio.to_thread(lambda: check(directory, existing, replace=replace))
        problems = _kind_mismatch(kind, directory) + [_problem(e) for e in checked.errors]
        if problems:
            return ImportCheck(kind, name, rows, problems=problems, replace=replace)
        summary = summarise(directory, existing, checked)
        removed = [str(r) for r in summary.removed]
        return ImportCheck(kind, name, rows, summary.counts(), removals=removed, replace=replace)

    async def _check_roster(self, name: str, roster: Roster) -> ImportCheck:
        rows = _rows((s.source for s in roster.shifts), roster.problems)
        async with self.db.session() as s:
            known = await read_known(s)
            checked = await asyncio.to_thread(check_roster, roster, known)
            warnings = [_problem(w) for w in checked.warnings]
            if checked.errors:
                return ImportCheck("roster", name, rows, problems=[_problem(e) for e in checked.errors])
            spans = spans_of(checked.shifts)
            reached = await stored_in_spans(s, spans)  # the same reading import_roster acts on
        trimmed = sum(1 for old in reached if old.kept)
        counts = {
            "shifts": len(checked.shifts),
            "units": len(spans),
            "replaced": len(reached) - trimmed,
            "trimmed": trimmed,
        }
        # a roster replaces its span by design (a corrected July roster replaces July): the check names whom
        return ImportCheck(
            "roster", name, rows, counts, warnings=warnings, removals=[str(old) for old in reached], replace=True
        )


def _directory_sources(d: Directory) -> list[Source | None]:
    return [u.source for u in d.units] + [p.source for p in d.people] + [x.source for x in d.devices]


def _kind_mismatch(kind: str, d: Directory) -> list[RowProblem]:
    """A file chosen as one table that holds another: said once, before its rows are looked at."""
    if kind not in _TABLE_LABEL:
        return []
    present = {t for t, rows in (("units", d.units), ("people", d.people), ("devices", d.devices)) if rows}
    other = sorted(present - {kind})
    if not other:
        return []
    found = "、".join(_TABLE_LABEL[t] for t in other)
    return [
        _file_problem(
            f"选择的是{_TABLE_LABEL[kind]}，但文件内容是{found}（按表头判断）；请选择正确的类型，或检查表头",
            "kind 类型",
        )
    ]
