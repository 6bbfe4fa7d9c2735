"""The console's file import: a check writes nothing and names every bad row; applying is all or nothing."""

from __future__ import annotations

import io
from datetime import datetime

import openpyxl
from sqlalchemy import func, select
from sqlmodel import col

from alerting.model.clock import ManualClock
from alerting.people.directory_port import ImportCheck
from alerting.store.db import Database
from alerting.store.tables import AuditEvent, Device, DutyShift, OrgUnit, Person, Responsibility
from config.directory.importer import FileImporter, safe_name
from tests.conftest import SmallCounty

PEOPLE_HEADER = "编号,姓名,手机,单位代码,职责,顺位\n"


async def count(db: Database, table: type[object]) -> int:
    async with db.session() as s:
        return int(await s.scalar(select(func.count()).select_from(table)) or 0)


async def audit_events(db: Database) -> list[AuditEvent]:
    async with db.session() as s:
        return list((await s.execute(select(AuditEvent).order_by(col(AuditEvent.seq)))).scalars())


def places(check: ImportCheck) -> set[tuple[int, str]]:
    return {(p.row, p.field.split(" ")[0]) for p in check.problems}


async def test_a_check_names_each_bad_row_and_field_and_writes_nothing(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    people_before, audit_before = await count(db, Person), len(await audit_events(db))
    csv = (
        PEOPLE_HEADER
        + "new-1,新网格员,13900001001,50023810100101,网格员,2\n"  # good
        + "new-2,坏手机,12345,50023810100101,网格员,3\n"  # row 3: phone
        + "new-3,错单位,13900001003,500238999999,网格员,0\n"  # row 4: unit_code
        + "new-4,错职责,13900001004,50023810100102,厨师,2\n"  # row 5: role
    )
    importer = FileImporter(db, clock)

    check = await importer.check("people", "新人员.csv", csv.encode())

    assert not check.ok
    assert check.rows == 4
    assert places(check) == {(3, "phone"), (4, "unit_code"), (5, "role")}
    assert check.counts == {}  # a file with problems promises nothing
    assert await count(db, Person) == people_before
    assert len(await audit_events(db)) == audit_before


async def test_a_clean_check_says_what_would_change_and_apply_writes_it_audited(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    csv = (
        PEOPLE_HEADER
        + "new-1,新网格员,13900001001,50023810100101,网格员,2\n"
        + "g3,网格员丙（改名）,+8613900000010,50023810100201,网格员,0\n"
    )
    importer = FileImporter(db, clock)
    people_before = await count(db, Person)

    check = await importer.check("people", "名单.csv", csv.encode("utf-8-sig"))

    assert check.ok, check.problems
    assert check.rows == 2
    assert check.counts["people_created"] == 1
    assert check.counts["people_updated"] == 1
    assert check.counts["responsibilities"] == 2
    assert await count(db, Person) == people_before  # still nothing written

    applied = await importer.apply("people", "名单.csv", csv.encode("utf-8-sig"), actor="user:admin")

    assert applied.applied and applied.ok
    assert applied.counts["people_created"] == 1
    async with db.session() as s:
        person = await s.get(Person, "new-1")
        renamed = await s.get(Person, "g3")
    assert person is not None and person.phone == "+8613900001001"
    assert renamed is not None and renamed.name == "网格员丙（改名）"
    event = (await audit_events(db))[-1]
    assert (event.kind, event.actor) == ("directory.imported", "user:admin")
    assert event.data["files"] == ["名单.csv"]
    assert event.data["people_created"] == 1


async def test_apply_with_one_bad_row_writes_none_of_the_good_ones(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    csv = (
        "代码,名称,类型,上级代码\n"
        + "500238101003,北坪村,村,500238101\n"
        + "50023810100301,北坪第1网格,网格,500238101003\n"
        + "500238101004,南坪村,网格,500238101\n"  # a grid straight under a township
    )
    importer = FileImporter(db, clock)
    units_before, audit_before = await count(db, OrgUnit), len(await audit_events(db))

    applied = await importer.apply("units", "村.csv", csv.encode(), actor="user:admin")

    assert not applied.applied
    assert places(applied) == {(4, "kind")}
    assert await count(db, OrgUnit) == units_before
    assert len(await audit_events(db)) == audit_before


async def test_apply_checks_again_and_refuses_what_became_wrong_since_the_check(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    importer = FileImporter(db, clock)
    first = (PEOPLE_HEADER + "new-1,新网格员,13900001001,50023810100101,网格员,2\n").encode()
    assert (await importer.check("people", "a.csv", first)).ok
    # meanwhile someone else imports the same number under another id
    other = (PEOPLE_HEADER + "other-1,另一人,13900001001,50023810100102,网格员,2\n").encode()
    assert (await importer.apply("people", "b.csv", other, actor="user:admin")).applied

    late = await importer.apply("people", "a.csv", first, actor="user:admin")

    assert not late.applied
    assert places(late) == {(2, "phone")}
    async with db.session() as s:
        assert await s.get(Person, "new-1") is None


async def test_a_file_chosen_as_the_wrong_kind_is_refused_before_its_rows(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    csv = "代码,名称,类型,上级代码\n500238101003,北坪村,村,500238101\n"
    check = await FileImporter(db, clock).check("people", "units.csv", csv.encode())
    assert not check.ok
    assert check.problems[0].row == 0
    assert "单位表" in check.problems[0].message


async def test_unreadable_uploads_are_named_plainly(db: Database, clock: ManualClock, county: SmallCounty) -> None:
    importer = FileImporter(db, clock)
    pdf = await importer.check("people", "名单.pdf", b"%PDF-1.4")
    empty = await importer.check("devices", "devices.csv", b"  \n")
    unknown = await importer.check("accounts", "a.csv", b"x")
    broken = await importer.check("directory", "book.xlsx", b"not a zip")
    assert "不支持的文件类型" in pdf.problems[0].message
    assert "文件为空" in empty.problems[0].message
    assert unknown.problems[0].field == "kind"
    assert "无法打开工作簿" in broken.problems[0].message
    assert not any(c.ok for c in (pdf, empty, unknown, broken))


def test_an_uploaded_name_cannot_reach_outside_the_temporary_folder() -> None:
    assert safe_name("../../etc/passwd.csv") == "passwd.csv"
    assert safe_name("C:\\Users\\王\\名单.xlsx") == "名单.xlsx"
    assert safe_name("..") == "upload"
    assert safe_name("a" * 300 + ".csv").endswith(".csv")
    assert len(safe_name("a" * 300 + ".csv")) <= 120


async def test_a_workbook_of_units_people_and_devices_names_the_sheet_of_a_bad_row(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    workbook = openpyxl.Workbook()
    units = workbook.active
    assert units is not None
    units.title = "单位"
    units.append(["代码", "名称", "类型", "上级代码"])
    units.append([500238101003, "北坪村", "村", 500238101])
    people = workbook.create_sheet("人员")
    people.append(["编号", "姓名", "手机", "单位代码", "职责", "顺位"])
    people.append(["bp-head", "北坪村主任", 13900002001, 500238101003, "村负责人", 0])
    devices = workbook.create_sheet("设备")
    devices.append(["编号", "单位代码", "类型", "名称"])
    devices.append(["siren-bp", 500238101003, "预警器", "北坪村预警器"])
    devices.append(["siren-x", 500238101009, "预警器", "不存在的村"])
    buffer = io.BytesIO()
    workbook.save(buffer)
    importer = FileImporter(db, clock)

    bad = await importer.check("directory", "名录.xlsx", buffer.getvalue())

    assert [(p.sheet, p.row, p.field.split(" ")[0]) for p in bad.problems] == [("设备", 3, "unit_code")]

    devices.delete_rows(3)
    buffer = io.BytesIO()
    workbook.save(buffer)
    good = await importer.check("directory", "名录.xlsx", buffer.getvalue())
    assert good.ok
    assert (good.counts["units_created"], good.counts["people_created"], good.counts["devices_created"]) == (1, 1, 1)
    assert (await importer.apply("directory", "名录.xlsx", buffer.getvalue(), actor="user:admin")).applied
    async with db.session() as s:
        unit = await s.get(OrgUnit, "500238101003")
        duty = await s.scalar(select(Responsibility).where(col(Responsibility.person_id) == "bp-head"))
        siren = await s.get(Device, "siren-bp")
    assert unit is not None and unit.path == "/500238/500238101/500238101003/"
    assert duty is not None and duty.unit_code == "500238101003"
    assert siren is not None


async def test_a_roster_check_counts_the_shifts_it_would_replace_and_apply_writes_them(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    header = "单位代码,值班人员,顺位,开始,结束\n"
    importer = FileImporter(db, clock)
    july = (header + "500238101,tw-duty,值班,2026-07-01 08:00,2026-07-01 20:00\n").encode()
    assert (await importer.apply("roster", "七月.csv", july, actor="user:admin")).applied

    again = (
        header
        + "500238101,tw-backup,值班,2026-07-01 08:00,2026-07-02 08:00\n"
        + "500238101,nobody,值班,2026-07-02 08:00,2026-07-02 20:00\n"  # row 3: unknown person
    ).encode()
    bad = await importer.check("roster", "改.csv", again)
    assert places(bad) == {(3, "person")}

    fixed = again.replace(b"nobody", b"13900000003")  # tw-duty by phone
    check = await importer.check("roster", "改.csv", fixed)
    assert check.ok, check.problems
    assert check.counts == {"shifts": 2, "units": 1, "replaced": 1, "trimmed": 0}
    # the check names whose shift goes, as the import will
    assert check.removals == [
        "500238101 值班 凤凰镇值班员 (tw-duty) 2026-07-01 08:00 – 2026-07-01 20:00: 被替换 replaced"
    ]
    assert await count(db, DutyShift) == 1

    applied = await importer.apply("roster", "改.csv", fixed, actor="user:admin")
    assert applied.applied and applied.removals == check.removals
    assert await count(db, DutyShift) == 2
    event = (await audit_events(db))[-1]
    assert (event.kind, event.actor, event.data["files"]) == ("roster.imported", "user:admin", ["改.csv"])
    async with db.session() as s:
        starts = sorted((await s.execute(select(col(DutyShift.starts_at)))).scalars())
    assert [t.replace(tzinfo=None) for t in starts] == [datetime(2026, 7, 1, 0, 0), datetime(2026, 7, 2, 0, 0)]
