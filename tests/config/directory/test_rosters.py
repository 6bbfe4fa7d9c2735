"""The duty room imports the townships' rosters (值班表) from the CSV and Excel files they send in."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import openpyxl
import pytest
from sqlalchemy import select, update
from sqlmodel import col
from typer.testing import CliRunner

import config.cli.main  # noqa: F401  (the roster commands import it when they run; loaded here, it logs to the real stderr)
from alerting.store.db import Database
from alerting.store.tables import AuditEvent, DutyShift, Person
from config.cli.roster import roster_app
from config.directory import RowError
from config.directory.rosters import RosterError, import_roster, load_roster
from tests.conftest import SmallCounty

AT = datetime(2026, 6, 30, 2, 0, tzinfo=UTC)
HEADER = "单位代码,值班人员,顺位,开始,结束\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


async def import_files(db: Database, *paths: Path) -> None:
    await import_roster(db, await load_roster(paths), actor="admin", at=AT)


async def stored(db: Database) -> list[tuple[str, str, int, str, str]]:
    """(unit, person, rank, start, end) of every stored shift, times in UTC as the store keeps them."""
    async with db.session() as s:
        rows = await s.execute(select(DutyShift).order_by(col(DutyShift.unit_code), col(DutyShift.starts_at)))
        return [
            (r.unit_code, r.person_id, r.rank, f"{r.starts_at:%m-%d %H:%M}", f"{r.ends_at:%m-%d %H:%M}")
            for r in rows.scalars()
        ]


async def audit_kinds(db: Database) -> list[str]:
    async with db.session() as s:
        return list((await s.execute(select(col(AuditEvent.kind)).order_by(col(AuditEvent.seq)))).scalars())


def located(errors: list[RowError]) -> set[tuple[str, int, str]]:
    """(file, line, English field name) of every problem, as whoever keeps the roster reads them."""
    return {(e.source.file, e.source.line, (e.field or "").split()[0]) for e in errors if e.source is not None}


async def test_a_csv_roster_is_stored_in_utc_with_people_found_by_id_or_phone(
    db: Database, county: SmallCounty, tmp_path: Path
) -> None:
    path = write(
        tmp_path / "凤凰镇7月值班表.csv",
        HEADER
        + "500238101,tw-duty,值班,2026-07-01 08:00,2026-07-01 20:00\n"
        + "500238101,139 0000 0004,备班,2026/7/1 8:00,2026/7/1 20:00\n"  # tw-backup's phone, as people write it
        + "500238101,tw-backup,0,2026-07-01 20:00,2026-07-01 24:00\n"
        + "500238,county-duty,,2026-07-01T08:00,2026-07-02T08:00\n",
    )
    roster = await load_roster([path])
    result = await import_roster(db, roster, actor="admin", at=AT)

    assert (result.shifts, result.units, result.replaced, result.trimmed, result.warnings) == (4, 2, 0, 0, ())
    assert await stored(db) == [
        ("500238", "county-duty", 0, "07-01 00:00", "07-02 00:00"),
        ("500238101", "tw-duty", 0, "07-01 00:00", "07-01 12:00"),
        ("500238101", "tw-backup", 1, "07-01 00:00", "07-01 12:00"),
        ("500238101", "tw-backup", 0, "07-01 12:00", "07-01 16:00"),
    ]
    async with db.session() as s:
        event = (await s.execute(select(AuditEvent).where(col(AuditEvent.kind) == "roster.imported"))).scalar_one()
    assert event.actor == "admin"
    assert event.data["shifts"] == 4
    assert event.data["unit_codes"] == ["500238", "500238101"]
    assert event.data["files"] == ["凤凰镇7月值班表.csv"]


async def test_an_excel_roster_with_english_headers_and_date_cells(
    db: Database, county: SmallCounty, tmp_path: Path
) -> None:
    workbook = openpyxl.Workbook()
    notes = workbook.active
    assert notes is not None
    notes.title = "说明"
    notes.append(["值班表填写说明：时间为北京时间"])
    sheet = workbook.create_sheet("July")
    sheet.append(["unit_code", "name", "person", "rank", "start", "end"])
    sheet.append([500238101, "赵值班", "tw-duty", 0, datetime(2026, 7, 1, 8, 0), datetime(2026, 7, 1, 20, 0)])
    sheet.append([500238101, "钱备班", 13900000004, 1, datetime(2026, 7, 1, 8, 0), datetime(2026, 7, 1, 20, 0)])
    # a time typed as text in an otherwise date-formatted column still reads
    sheet.append([500238101, "赵值班", "tw-duty", 0, datetime(2026, 7, 1, 20, 0), "2026-07-02 08:00"])
    path = tmp_path / "roster.xlsx"
    workbook.save(path)

    await import_files(db, path)

    assert await stored(db) == [
        ("500238101", "tw-duty", 0, "07-01 00:00", "07-01 12:00"),
        ("500238101", "tw-backup", 1, "07-01 00:00", "07-01 12:00"),
        ("500238101", "tw-duty", 0, "07-01 12:00", "07-02 00:00"),
    ]


async def test_every_bad_row_is_reported_with_line_and_field_and_nothing_is_written(
    db: Database, county: SmallCounty, tmp_path: Path
) -> None:
    async with db.session() as s:
        await s.execute(update(Person).where(col(Person.id) == "g3").values(active=False))
    path = write(
        tmp_path / "bad.csv",
        HEADER
        + "500238101,tw-duty,值班,2026-07-01 08:00,2026-07-01 20:00\n"  # 2: fine on its own
        + "500238999,tw-duty,值班,2026-07-02 08:00,2026-07-02 20:00\n"  # 3: no such unit
        + "500238101001,v1-head,值班,2026-07-01 08:00,2026-07-01 20:00\n"  # 4: a village has no roster
        + "500238101,nobody,备班,2026-07-01 08:00,2026-07-01 20:00\n"  # 5: no such person
        + "500238101,13800000000,备班,2026-07-02 08:00,2026-07-02 20:00\n"  # 6: a phone nobody has
        + "500238101,tw-backup,值班,2026-07-01 18:00,2026-07-02 08:00\n"  # 7: overlaps line 2
        + "500238101,tw-backup,备班,2026-07-03 08:00,2026-07-03 06:00\n"  # 8: ends before it starts
        + "500238101,tw-backup,备班,7月3日早上,2026-07-03 20:00\n"  # 9: not a time
        + "500238101,tw-backup,第二,2026-07-04 08:00,2026-07-04 20:00\n"  # 10: not a rank
        + "500238101,g3,备班,2026-07-05 08:00,2026-07-05 20:00\n"  # 11: left the job
        + ",tw-backup,备班,2026-07-06 08:00,2026-07-06 20:00\n",  # 12: no unit
    )
    with pytest.raises(RosterError) as raised:
        await import_files(db, path)

    errors = raised.value.errors
    assert located(errors) == {
        ("bad.csv", 3, "unit_code"),
        ("bad.csv", 4, "unit_code"),
        ("bad.csv", 5, "person"),
        ("bad.csv", 6, "person"),
        ("bad.csv", 7, "start"),
        ("bad.csv", 8, "end"),
        ("bad.csv", 9, "start"),
        ("bad.csv", 10, "rank"),
        ("bad.csv", 11, "person"),
        ("bad.csv", 12, "unit_code"),
    }
    overlap = next(e for e in errors if e.source is not None and e.source.line == 7)
    assert "bad.csv line 2" in overlap.message  # names the other row
    assert "2026-07-01 18:00" in overlap.message  # in the local times of the file
    assert "13800000000" not in str(raised.value)  # phone numbers are masked
    assert "村" in next(e.message for e in errors if e.source is not None and e.source.line == 4)
    assert await stored(db) == []
    assert "roster.imported" not in await audit_kinds(db)


async def test_a_header_without_the_needed_columns_is_named(db: Database, county: SmallCounty, tmp_path: Path) -> None:
    path = write(tmp_path / "short.csv", "单位代码,姓名,开始\n500238101,赵值班,2026-07-01 08:00\n")
    with pytest.raises(RosterError) as raised:
        await import_files(db, path)
    assert located(raised.value.errors) == {("short.csv", 1, "person"), ("short.csv", 1, "end")}


async def test_a_shift_over_48_hours_is_imported_but_flagged(db: Database, county: SmallCounty, tmp_path: Path) -> None:
    path = write(tmp_path / "long.csv", HEADER + "500238,county-duty,值班,2026-07-01 08:00,2026-07-04 08:00\n")
    result = await import_roster(db, await load_roster([path]), actor="admin", at=AT)
    assert result.shifts == 1
    assert [(w.source.line if w.source else 0, w.field) for w in result.warnings] == [(2, "end 结束")]
    assert "72 hours" in result.warnings[0].message


async def test_a_new_roster_replaces_the_stored_shifts_in_its_span_only(
    db: Database, county: SmallCounty, tmp_path: Path
) -> None:
    week = HEADER + "".join(
        f"500238101,{'tw-duty' if d % 2 else 'tw-backup'},值班,2026-07-0{d} 08:00,2026-07-0{d + 1} 08:00\n"
        for d in range(1, 5)
    )
    await import_files(
        db,
        write(tmp_path / "week.csv", week + "500238,county-duty,值班,2026-07-01 08:00,2026-07-05 08:00\n"),
    )
    # the township swaps the middle of the week, from noon on the 2nd to noon on the 3rd
    change = HEADER + "500238101,tw-duty,值班,2026-07-02 12:00,2026-07-03 12:00\n"
    result = await import_roster(db, await load_roster([write(tmp_path / "swap.csv", change)]), actor="a", at=AT)

    assert (result.replaced, result.trimmed) == (0, 2)
    assert await stored(db) == [
        ("500238", "county-duty", 0, "07-01 00:00", "07-05 00:00"),  # another unit: untouched
        ("500238101", "tw-duty", 0, "07-01 00:00", "07-02 00:00"),  # outside the span: kept
        ("500238101", "tw-backup", 0, "07-02 00:00", "07-02 04:00"),  # cut back to before the span
        ("500238101", "tw-duty", 0, "07-02 04:00", "07-03 04:00"),  # the new shift
        ("500238101", "tw-duty", 0, "07-03 04:00", "07-04 00:00"),  # cut back to after the span
        ("500238101", "tw-backup", 0, "07-04 00:00", "07-05 00:00"),
    ]
    # the same file again replaces what it wrote, and nothing else
    again = await import_roster(db, await load_roster([tmp_path / "swap.csv"]), actor="a", at=AT)
    assert (again.replaced, again.trimmed) == (1, 0)
    assert len(await stored(db)) == 6
    assert (await audit_kinds(db)).count("roster.imported") == 3


async def test_the_cli_lists_every_problem_and_exits_2(
    db: Database, county: SmallCounty, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JIAOYING_DATABASE_URL", db.url)
    monkeypatch.setenv("JIAOYING_CONFIG", str(tmp_path / "none.toml"))
    bad = write(tmp_path / "bad.csv", HEADER + "500238101,nobody,值班,2026-07-01 08:00,2026-07-01 20:00\n")
    good = write(tmp_path / "good.csv", HEADER + "500238101,tw-duty,值班,2026-07-01 08:00,2026-07-01 20:00\n")
    runner = CliRunner()

    refused = await asyncio.to_thread(runner.invoke, roster_app, ["import", str(bad)])
    assert refused.exit_code == 2
    assert "bad.csv line 2, person 值班人员" in refused.output
    assert await stored(db) == []

    done = await asyncio.to_thread(runner.invoke, roster_app, ["import", str(good)])
    assert done.exit_code == 0, done.output
    assert "1 shifts for 1 unit(s), 2026-07-01 08:00 – 2026-07-01 20:00" in done.output
    assert len(await stored(db)) == 1


async def test_the_shifts_a_roster_replaces_are_named_by_person_and_time(
    db: Database, county: SmallCounty, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A one-row roster replaces its span for the township, the backup's shift included: the import names whom."""
    monkeypatch.setenv("JIAOYING_DATABASE_URL", db.url)
    monkeypatch.setenv("JIAOYING_CONFIG", str(tmp_path / "none.toml"))
    await import_files(
        db,
        write(
            tmp_path / "day.csv",
            HEADER
            + "500238101,tw-duty,值班,2026-07-01 08:00,2026-07-01 20:00\n"
            + "500238101,tw-backup,备班,2026-07-01 06:00,2026-07-01 20:00\n",
        ),
    )
    one_row = write(tmp_path / "one.csv", HEADER + "500238101,v1-head,值班,2026-07-01 08:00,2026-07-01 20:00\n")

    done = await asyncio.to_thread(CliRunner().invoke, roster_app, ["import", str(one_row)])

    assert done.exit_code == 0, done.output
    said = " ".join(done.output.split())
    assert "1 stored shifts replaced, 1 trimmed" in said
    assert (
        "stored shift: 500238101 值班 凤凰镇值班员 (tw-duty) 2026-07-01 08:00 – 2026-07-01 20:00: 被替换 replaced"
        in said
    )
    assert (
        "stored shift: 500238101 备班 凤凰镇备岗 (tw-backup) 2026-07-01 06:00 – 2026-07-01 20:00: "
        "截短为 cut back to 2026-07-01 06:00 – 2026-07-01 08:00" in said
    )
    async with db.session() as s:
        entry = (await s.execute(select(AuditEvent).order_by(col(AuditEvent.seq).desc()).limit(1))).scalar_one()
    assert entry.kind == "roster.imported" and len(entry.data["removed"]) == 2
    assert [r.split(" (")[1].split(")")[0] for r in entry.data["removed"]] == ["tw-backup", "tw-duty"]  # by start
