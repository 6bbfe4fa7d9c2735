"""Importing duty rosters (值班表) from CSV or Excel: read, check against the directory, write, all or nothing.

    roster = await load_roster([Path("凤凰镇7月值班表.xlsx")])
    result = await import_roster(db, roster, actor="cli:roster", at=clock.now())

Columns, with Chinese or English headers (others, such as 姓名 or 备注, are left alone):
单位代码/unit_code (a township or the county), 值班人员/person (a person id, or a phone number of someone
in the directory), 顺位/rank (0 or 值班 = primary, 1 or 备班 = backup; empty = 0), 开始/start and 结束/end
in Asia/Shanghai time ("2026-07-01 08:00", "2026/7/1 8:00", "24:00" for the end of a day, or Excel dates).

`import_roster` raises `RosterError` listing every problem (file, line, field) and writes nothing when there
is one. A clean roster replaces, for each unit in it, what is stored within the span the files give that
unit (its earliest start to its latest end): stored shifts inside the span go, shifts reaching over an edge
of it are cut back to the part outside, shifts outside it stay. Shifts over 48 hours are imported but
reported back as warnings.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, TypeVar

import structlog
from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting.audit import chain as audit
from alerting.model.clock import SHANGHAI, local_text
from alerting.model.domain import UnitKind
from alerting.model.privacy import mask_phone
from alerting.store.db import Database
from alerting.store.tables import DutyShift, OrgUnit, Person
from alerting.views.labels import UNIT_KIND_LABEL, label
from config.directory.model import RowError, Source
from config.directory.parse import cell_text, normalise_phone
from config.directory.text import UnreadableFile, decode_text, delimiter, unreadable_workbook

log = structlog.get_logger()

MAX_SHIFT = timedelta(hours=48)
_ID_CHUNK = 500  # ids per IN (...) list

# canonical column -> names a header may use, compared after _norm
_COLUMNS: dict[str, tuple[str, ...]] = {
    "unit_code": ("unit_code", "unit", "单位代码", "单位编码"),
    "person": ("person", "person_id", "值班人员", "值班人", "值班员", "人员"),
    "rank": ("rank", "顺位", "班次"),
    "start": ("start", "starts_at", "开始", "开始时间"),
    "end": ("end", "ends_at", "结束", "结束时间"),
}
_REQUIRED = ("unit_code", "person", "start", "end")
LABELS = {
    "unit_code": "unit_code 单位代码",
    "person": "person 值班人员",
    "rank": "rank 顺位",
    "start": "start 开始",
    "end": "end 结束",
}
_RANK_WORDS = {"值班": 0, "主班": 0, "primary": 0, "备班": 1, "备岗": 1, "backup": 1}
_TEXT_FORMATS = (
    "%Y/%m/%d %H:%M",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d",
    "%Y.%m.%d %H:%M",
    "%Y年%m月%d日 %H:%M",
    "%Y年%m月%d日%H:%M",
    "%Y年%m月%d日%H时",
    "%Y年%m月%d日",
    "%Y-%m-%d %H:%M",  # fromisoformat wants two-digit months and hours; these take "2026-7-1 8:00"
    "%Y-%m-%d",
)
_END_OF_DAY = re.compile(r"(.*\D)24:00(?::00)?")


# ---- reading ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShiftRow:
    """One shift as a row stated it; times already in UTC."""

    unit_code: str
    person: str  # as written: a person id or a phone number
    rank: int
    starts_at: datetime
    ends_at: datetime
    source: Source


@dataclass(frozen=True)
class Roster:
    """What the files said. `problems` holds rows that could not be read; they are not in `shifts`."""

    shifts: tuple[ShiftRow, ...] = ()
    problems: tuple[RowError, ...] = ()
    files: tuple[str, ...] = ()


def _norm(text: str) -> str:
    return text.replace("\ufeff", "").replace("\u3000", " ").strip().lower()


def _problem(source: Source, column: str | None, message: str) -> RowError:
    return RowError(source, LABELS.get(column or "", column), message)


def _round_second(moment: datetime) -> datetime:
    return (moment + timedelta(microseconds=500_000)).replace(microsecond=0)


def _parse_text(text: str) -> datetime:
    text = " ".join(text.split())
    if not text:
        raise ValueError("为空 empty")
    next_day = False
    if m := _END_OF_DAY.fullmatch(text):
        text, next_day = m.group(1) + "00:00", True
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        for fmt in _TEXT_FORMATS:
            try:
                moment = datetime.strptime(text, fmt)  # a local time: the caller sets the zone
                break
            except ValueError:
                continue
        else:
            raise ValueError(
                f"无法识别的时间 {text!r} is not a time; write it like 2026-07-01 08:00 (Asia/Shanghai)"
            ) from None
    return moment + timedelta(days=1) if next_day else moment


def parse_local_time(value: object) -> datetime:
    """A roster cell as an aware UTC time. Times without a zone are Asia/Shanghai. ValueError says what is wrong."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime.combine(value, time())
    elif isinstance(value, time):
        raise ValueError(f"只有时刻没有日期 {value:%H:%M} has no date; write e.g. 2026-07-01 {value:%H:%M}")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        from openpyxl.utils.datetime import from_excel

        if value < 1:
            raise ValueError(f"只有时刻没有日期 {value!r} has no date")
        moment = from_excel(value)  # a date cell that lost its date format: Excel's day number
    else:
        moment = _parse_text(cell_text(value))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=SHANGHAI)
    # Excel keeps times as fractions of a day; 08:00 may come back a microsecond short
    return _round_second(moment.astimezone(UTC))


def _parse_rank(raw: str) -> int:
    if not raw:
        return 0
    word = _RANK_WORDS.get(_norm(raw))
    if word is not None:
        return word
    try:
        rank = int(raw)
    except ValueError:
        rank = -1
    if rank < 0:
        raise ValueError(f"顺位无效 rank {raw!r}: 0 or 值班 for the primary, 1 or 备班 for the backup")
    return rank


Numbered = Iterable[tuple[int, Sequence[object]]]
_T = TypeVar("_T")


@dataclass
class _Reader:
    shifts: list[ShiftRow] = field(default_factory=list)
    problems: list[RowError] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def table(self, rows: Numbered, source: Callable[[int], Source], *, optional: bool = False) -> bool:
        """Read one table whose first non-empty row is the header. False when it is not a roster table."""
        numbered = iter(rows)
        header = next(((line, cells) for line, cells in numbered if any(cell_text(c) for c in cells)), None)
        if header is None:
            return False
        known = {_norm(alias): canon for canon, aliases in _COLUMNS.items() for alias in aliases}
        positions = [known.get(_norm(cell_text(c))) for c in header[1]]
        missing = [c for c in _REQUIRED if c not in positions]
        if optional and len(missing) == len(_REQUIRED):
            return False  # an instructions sheet (说明) or similar
        if missing:
            for column in missing:
                self.problems.append(_problem(source(header[0]), column, "缺少此列 this column is missing"))
            return True
        for line, cells in numbered:
            values = {c: v for c, v in zip(positions, cells, strict=False) if c is not None}
            if any(cell_text(v) for v in values.values()):
                self.row(values, source(line))
        return True

    def row(self, values: Mapping[str, object], source: Source) -> None:
        before = len(self.problems)
        unit_code, person = cell_text(values.get("unit_code")), cell_text(values.get("person"))
        if not unit_code:
            self.problems.append(_problem(source, "unit_code", "为空 empty: which township or county is this for"))
        if not person:
            self.problems.append(_problem(source, "person", "为空 empty: a person id or phone number is needed"))
        rank = self.parsed(source, "rank", lambda: _parse_rank(cell_text(values.get("rank"))))
        start = self.parsed(source, "start", lambda: parse_local_time(values.get("start")))
        end = self.parsed(source, "end", lambda: parse_local_time(values.get("end")))
        if len(self.problems) == before and rank is not None and start is not None and end is not None:
            self.shifts.append(ShiftRow(unit_code, person, rank, start, end, source))

    def parsed(self, source: Source, column: str, parse: Callable[[], _T]) -> _T | None:
        try:
            return parse()
        except ValueError as exc:
            self.problems.append(_problem(source, column, str(exc)))
            return None

    def csv(self, path: Path) -> None:
        try:
            text = decode_text(path.name, path.read_bytes())
        except UnreadableFile as exc:
            self.problems.append(_problem(Source(path.name, 0), None, str(exc)))
            return
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter(text))
        # the reader's line count after a row is the line an editor shows, also when a quoted cell spans lines
        if not self.table(((reader.line_num, row) for row in reader), lambda line: Source(path.name, line)):
            self.problems.append(_problem(Source(path.name, 1), None, "文件为空 the file is empty"))

    def xlsx(self, path: Path) -> None:
        import openpyxl  # only needed for workbooks

        try:
            workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
        except Exception as exc:  # openpyxl raises zipfile, KeyError and its own errors for broken files
            self.problems.append(_problem(Source(path.name, 0), None, unreadable_workbook(path.name, exc)))
            return
        try:
            found = False
            for sheet in workbook.worksheets:
                title = str(sheet.title)
                rows = enumerate(sheet.iter_rows(values_only=True), start=1)
                found |= self.table(rows, _sheet_source(path.name, title), optional=True)
        finally:
            workbook.close()
        if not found:
            self.problems.append(
                _problem(Source(path.name, 0), None, "没有值班表 no sheet has the columns 单位代码,值班人员,开始,结束")
            )

    def read(self, path: Path) -> None:
        self.files.append(path.name)
        before = (len(self.shifts), len(self.problems))
        suffix = path.suffix.lower()
        try:
            if suffix == ".csv":
                self.csv(path)
            elif suffix in (".xlsx", ".xlsm"):
                self.xlsx(path)
            else:
                self.problems.append(_problem(Source(path.name, 0), None, "不支持的文件类型 use .csv or .xlsx"))
        except OSError as exc:
            self.problems.append(_problem(Source(path.name, 0), None, f"无法读取 cannot read: {exc.strerror or exc}"))
        if (len(self.shifts), len(self.problems)) == before:
            self.problems.append(_problem(Source(path.name, 0), None, "没有班次 the file lists no shifts"))


def _sheet_source(file: str, sheet: str) -> Callable[[int], Source]:
    return lambda line: Source(file, line, sheet)


def read_roster(paths: Sequence[Path]) -> Roster:
    """Read roster files. Blocking: from async code use `load_roster`."""
    reader = _Reader()
    for path in paths:
        reader.read(path)
    return Roster(tuple(reader.shifts), tuple(reader.problems), tuple(reader.files))


async def load_roster(paths: Sequence[Path]) -> Roster:
    """Read CSV and .xlsx roster files in a worker thread. Rows that could not be read are in `problems`."""
    return await asyncio.to_thread(read_roster, list(paths))


# ---- checking -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Known:
    """What the directory holds that a roster must fit with."""

    unit_kinds: Mapping[str, str] = field(default_factory=dict)  # code -> kind
    active: Mapping[str, bool] = field(default_factory=dict)  # person id -> active
    phones: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # E.164 -> person ids


async def read_known(session: AsyncSession) -> Known:
    units = {r.code: r.kind for r in await session.execute(select(col(OrgUnit.code), col(OrgUnit.kind)))}
    active: dict[str, bool] = {}
    phones: dict[str, list[str]] = defaultdict(list)
    for r in await session.execute(select(col(Person.id), col(Person.phone), col(Person.active))):
        active[r.id] = r.active
        if r.phone:
            phones[r.phone].append(r.id)
    return Known(units, active, {p: tuple(ids) for p, ids in phones.items()})


@dataclass(frozen=True)
class Shift:
    """A checked shift, ready to store."""

    unit_code: str
    person_id: str
    rank: int
    starts_at: datetime
    ends_at: datetime
    source: Source


@dataclass(frozen=True)
class CheckedRoster:
    shifts: tuple[Shift, ...]
    errors: tuple[RowError, ...]
    warnings: tuple[RowError, ...]


def _span_text(row: ShiftRow) -> str:
    return f"{local_text(row.starts_at)[:16]} – {local_text(row.ends_at)[:16]}"


def _shown(person: str) -> str:
    """A person as written, with a phone number masked: messages end up in logs and terminals."""
    phone = normalise_phone(person) if any(ch.isdigit() for ch in person) else None
    return mask_phone(phone) if phone else person


def _resolve_person(raw: str, known: Known) -> tuple[str | None, str | None]:
    """(person id, None) or (None, why not)."""
    if raw in known.active:
        person_id = raw
    else:
        phone = normalise_phone(raw) if any(ch.isdigit() for ch in raw) else None
        ids = known.phones.get(phone, ()) if phone else ()
        if len(ids) > 1:
            return None, f"手机号对应多人 phone {mask_phone(phone)} belongs to {', '.join(ids)}; write the person id"
        if not ids:
            shown = mask_phone(phone) if phone else repr(raw)
            return None, f"人员不存在 unknown person {shown}: neither a person id nor the phone of anyone listed"
        person_id = ids[0]
    if not known.active[person_id]:
        return None, f"人员已停用 person {person_id} is no longer active"
    return person_id, None


def check_roster(roster: Roster, known: Known) -> CheckedRoster:
    """Every problem with the roster, against the directory; warnings do not stop an import."""
    errors: list[RowError] = list(roster.problems)
    warnings: list[RowError] = []
    shifts: list[Shift] = []
    timed: dict[tuple[str, int], list[ShiftRow]] = defaultdict(list)
    duty_kinds = (UnitKind.TOWNSHIP.value, UnitKind.COUNTY.value)
    for row in roster.shifts:
        ok = True
        kind = known.unit_kinds.get(row.unit_code)
        if kind is None:
            errors.append(_problem(row.source, "unit_code", f"单位不存在 unknown unit {row.unit_code!r}"))
            ok = False
        elif kind not in duty_kinds:
            kind_label = label(UNIT_KIND_LABEL, kind)
            errors.append(
                _problem(
                    row.source,
                    "unit_code",
                    f"只有乡镇/街道和区县有值班表 {row.unit_code} is a {kind} ({kind_label}); "
                    "rosters are for a township or the county",
                )
            )
            ok = False
        person_id, why = _resolve_person(row.person, known)
        if why is not None:
            errors.append(_problem(row.source, "person", why))
            ok = False
        if row.ends_at <= row.starts_at:
            errors.append(
                _problem(row.source, "end", f"结束不晚于开始 the shift {_span_text(row)} does not end after it starts")
            )
            continue
        timed[(row.unit_code, row.rank)].append(row)
        if row.ends_at - row.starts_at > MAX_SHIFT:
            hours = (row.ends_at - row.starts_at).total_seconds() / 3600
            warnings.append(
                _problem(row.source, "end", f"班次超过48小时 the shift {_span_text(row)} lasts {hours:g} hours")
            )
        if ok and person_id is not None:
            shifts.append(Shift(row.unit_code, person_id, row.rank, row.starts_at, row.ends_at, row.source))
    errors += _overlaps(timed)
    return CheckedRoster(tuple(shifts), tuple(sorted(errors, key=_sort_key)), tuple(warnings))


def _overlaps(timed: Mapping[tuple[str, int], list[ShiftRow]]) -> Iterator[RowError]:
    """One error per shift that starts before an earlier one of the same unit and rank has ended."""
    for (unit_code, rank), rows in timed.items():
        rows.sort(key=lambda r: (r.starts_at, r.ends_at))
        latest = rows[0]
        for row in rows[1:]:
            if row.starts_at < latest.ends_at:
                yield _problem(
                    row.source,
                    "start",
                    f"班次重叠 {_shown(row.person)} {_span_text(row)} overlaps {_shown(latest.person)} "
                    f"{_span_text(latest)} "
                    f"at {latest.source} (unit {unit_code}, rank {rank})",
                )
            if row.ends_at > latest.ends_at:
                latest = row


def _sort_key(e: RowError) -> tuple[str, str, int]:
    s = e.source
    return (s.file, s.sheet or "", s.line) if s is not None else ("", "", 0)


class RosterError(Exception):
    """The roster cannot be imported; `errors` lists every problem found, not just the first."""

    def __init__(self, errors: Iterable[RowError]) -> None:
        self.errors = sorted(errors, key=_sort_key)
        super().__init__(str(self))

    def __str__(self) -> str:
        n = len(self.errors)
        head = f"值班表有 {n} 处错误，未导入任何数据 / {n} problem(s), nothing was imported:"
        return "\n".join([head, *(f"  - {e}" for e in self.errors)])


# ---- writing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RosterImportResult:
    shifts: int  # shifts written from the files
    units: int  # townships and the county whose roster changed
    replaced: int  # stored shifts inside an imported span, removed
    trimmed: int  # stored shifts reaching over an edge of a span, cut back to the part outside it
    starts_at: datetime  # the earliest start in the files
    ends_at: datetime  # the latest end
    warnings: tuple[RowError, ...] = ()
    removed: tuple[str, ...] = ()  # the replaced and trimmed shifts, by person and time (see `stored_in_spans`)

    def counts(self) -> dict[str, int]:
        return {
            "shifts": self.shifts,
            "units": self.units,
            "replaced": self.replaced,
            "trimmed": self.trimmed,
            "warnings": len(self.warnings),
        }

    def __str__(self) -> str:
        return (
            f"{self.shifts} shifts for {self.units} unit(s), {local_text(self.starts_at)[:16]} – "
            f"{local_text(self.ends_at)[:16]} (Asia/Shanghai); {self.replaced} stored shifts replaced, "
            f"{self.trimmed} trimmed"
        )


def spans_of(shifts: Iterable[Shift]) -> dict[str, tuple[datetime, datetime]]:
    """Each unit's span in the files, from its first start to its last end: what an import replaces."""
    spans: dict[str, tuple[datetime, datetime]] = {}
    for s in shifts:
        lo, hi = spans.get(s.unit_code, (s.starts_at, s.ends_at))
        spans[s.unit_code] = (min(lo, s.starts_at), max(hi, s.ends_at))
    return spans


@dataclass(frozen=True)
class StoredShift:
    """A stored shift an import reaches: removed when inside the unit's span, else cut back to what is outside."""

    id: int
    unit_code: str
    person_id: str
    person_name: str
    rank: int
    starts_at: datetime
    ends_at: datetime
    kept: tuple[tuple[datetime, datetime], ...]  # the parts outside the span, which stay

    def __str__(self) -> str:
        rank = {0: "值班", 1: "备班"}.get(self.rank, f"顺位 {self.rank}")
        what = f"{self.unit_code} {rank} {self.person_name} ({self.person_id}) {_span(self.starts_at, self.ends_at)}"
        if not self.kept:
            return f"{what}: 被替换 replaced"
        return f"{what}: 截短为 cut back to {', '.join(_span(a, b) for a, b in self.kept)}"


def _span(a: datetime, b: datetime) -> str:
    return f"{local_text(a)[:16]} – {local_text(b)[:16]}"


async def stored_in_spans(s: AsyncSession, spans: Mapping[str, tuple[datetime, datetime]]) -> list[StoredShift]:
    """The stored shifts importing these spans replaces or cuts back, named, in the order a roster reads."""
    found: list[StoredShift] = []
    for unit_code, (lo, hi) in sorted(spans.items()):
        stored = await s.execute(
            select(
                col(DutyShift.id),
                col(DutyShift.person_id),
                col(Person.name),
                col(DutyShift.rank),
                col(DutyShift.starts_at),
                col(DutyShift.ends_at),
            )
            .join(Person, col(Person.id) == col(DutyShift.person_id))
            .where(col(DutyShift.unit_code) == unit_code, col(DutyShift.starts_at) < hi, col(DutyShift.ends_at) > lo)
            .order_by(col(DutyShift.starts_at), col(DutyShift.rank))
        )
        for old in stored:
            assert old.id is not None
            kept = [(old.starts_at, lo)] if old.starts_at < lo else []
            kept += [(hi, old.ends_at)] if old.ends_at > hi else []
            found.append(
                StoredShift(
                    old.id, unit_code, old.person_id, old.name, old.rank, old.starts_at, old.ends_at, tuple(kept)
                )
            )
    return found


async def import_roster(db: Database, roster: Roster, *, actor: str, at: datetime) -> RosterImportResult:
    """Check the roster against the directory and write it in one transaction.

    Raises RosterError listing every problem (and having written nothing) when anything is wrong.
    """
    async with db.session() as s:
        known = await read_known(s)
        checked = await asyncio.to_thread(check_roster, roster, known)
        if checked.errors or not checked.shifts:
            log.warning("roster.rejected", problems=len(checked.errors), files=list(roster.files))
            raise RosterError(checked.errors or [RowError(None, None, "没有班次 no shifts to import")])
        spans = spans_of(checked.shifts)
        reached = await stored_in_spans(s, spans)
        removed = [old.id for old in reached]
        trimmed = sum(1 for old in reached if old.kept)
        rows: list[dict[str, Any]] = [
            {"unit_code": old.unit_code, "person_id": old.person_id, "rank": old.rank, "starts_at": a, "ends_at": b}
            for old in reached
            for a, b in old.kept
        ]
        for i in range(0, len(removed), _ID_CHUNK):
            await s.execute(delete(DutyShift).where(col(DutyShift.id).in_(removed[i : i + _ID_CHUNK])))
        rows += [
            {
                "unit_code": x.unit_code,
                "person_id": x.person_id,
                "rank": x.rank,
                "starts_at": x.starts_at,
                "ends_at": x.ends_at,
            }
            for x in checked.shifts
        ]
        await s.execute(insert(DutyShift), rows)
        result = RosterImportResult(
            shifts=len(checked.shifts),
            units=len(spans),
            replaced=len(removed) - trimmed,
            trimmed=trimmed,
            starts_at=min(lo for lo, _ in spans.values()),
            ends_at=max(hi for _, hi in spans.values()),
            warnings=checked.warnings,
            removed=tuple(str(old) for old in reached),
        )
        data = {
            **result.counts(),
            "unit_codes": sorted(spans),
            "from": result.starts_at.isoformat(),
            "to": result.ends_at.isoformat(),
            "files": list(roster.files),
            "removed": list(result.removed),
        }
        await audit.append(s, [audit.Entry(kind="roster.imported", actor=actor, at=at, data=data)])
    log.info("roster.imported", actor=actor, **result.counts())
    return result
