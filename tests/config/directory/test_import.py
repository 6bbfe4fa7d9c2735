"""An administrator imports the county's units and people from the files the duty room keeps."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import openpyxl
import pytest
from sqlalchemy import func, select
from sqlmodel import col
from typer.testing import CliRunner

from alerting.audit import chain as audit
from alerting.store.db import Database
from alerting.store.tables import AuditEvent, Device, OrgUnit, Person, Responsibility
from config.directory import (
    DirectoryError,
    ImportResult,
    RowError,
    check_import,
    import_directory,
    load_directory,
    person_id_for_phone,
)

AT = datetime(2026, 6, 1, 1, 0, tzinfo=UTC)

BASE_YAML = """\
units:
  - {code: "500238", name: 巫溪县, kind: county}
  - {code: 500238101, name: 凤凰镇, kind: township, parent_code: 500238}
  - {code: 500238101200, name: 青龙村, kind: village, parent_code: 500238101}
  - {code: 50023810120001, name: 第1网格, kind: grid, parent_code: 500238101200}
people:
  - {id: duty, name: 巫溪县应急值班室, phone: "13800000001", unit_code: "500238", role: county_duty, rank: 0}
  - {id: tw, name: 赵敏, phone: "13912340002", email: tw@yj.wuxi.example, unit_code: "500238101", role: township_duty}
  - {id: head, name: 孙强, phone: "13912340003", wecom_userid: sunqiang, unit_code: "500238101200", role: village_head}
  - {id: head, name: 孙强, phone: "13912340003", wecom_userid: sunqiang, unit_code: "50023810120001",
     role: grid_worker, rank: 1}
  - {id: gw, name: 周杰, phone: "13912340004", unit_code: "50023810120001", role: grid_worker, rank: 0}
devices:
  - {id: siren-500238101200, unit_code: "500238101200", kind: siren, name: 青龙村预警器}
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


async def count_rows(db: Database) -> dict[str, int]:
    async with db.session() as s:
        return {
            table.__name__: (await s.execute(select(func.count()).select_from(table))).scalar_one()
            for table in (OrgUnit, Person, Responsibility, Device, AuditEvent)
        }


async def duties(db: Database, unit_code: str) -> list[tuple[str, str, int]]:
    async with db.session() as s:
        rows = await s.execute(
            select(col(Responsibility.person_id), col(Responsibility.role), col(Responsibility.rank))
            .where(col(Responsibility.unit_code) == unit_code)
            .order_by(col(Responsibility.rank))
        )
        return [(r.person_id, r.role, r.rank) for r in rows]


async def import_files(db: Database, *paths: Path, replace: bool = False) -> ImportResult:
    return await import_directory(db, await load_directory(paths), actor="admin", at=AT, replace=replace)


def located(errors: list[RowError]) -> set[tuple[str, int, str]]:
    """(file, line, English field name) of every problem, as the administrator reads them in the report."""
    return {(e.source.file, e.source.line, (e.field or "").split()[0]) for e in errors if e.source is not None}


async def test_every_bad_row_is_reported_with_line_and_field_and_nothing_is_written(
    db: Database, tmp_path: Path
) -> None:
    await import_files(db, write(tmp_path / "base.yaml", BASE_YAML))
    before = await count_rows(db)
    units = write(
        tmp_path / "units.csv",
        "代码,名称,类型,上级代码\n"
        "500238,巫溪县,区县,\n"
        "500238101,凤凰镇,乡镇,500238\n"
        "50023810A001,东坪村,村,500238101\n"  # 4: code with a letter
        "500238101002,西坪村,村,500238999\n"  # 5: parent nowhere
        "50023810100101,第1网格,网格,500238101\n"  # 6: a grid straight under a township
        "500238101,凤凰镇,乡镇,500238\n"  # 7: the same code again
        "500238101003,南坪村,镇区,500238101\n",  # 8: no such kind
    )
    people = write(
        tmp_path / "people.csv",
        "编号,姓名,手机,企业微信,邮箱,单位代码,职责,顺位\n"
        "t1,张伟,13800138000,zhangwei,,500238101,乡镇值班员,0\n"
        "t2,李娜,1380013,,,500238101,乡镇值班员,1\n"  # 3: phone too short
        "t3,王芳,13900139000,,,500238101,村长,2\n"  # 4: no such role
        "t4,刘洋,13700137000,,,500238777,网格员,0\n"  # 5: no such unit
        "t5,陈静,13600136000,,,500238101,township_duty,0\n"  # 6: a second primary
        "t1,张伟伟,13800138000,zhangwei,,500238,县值班室,0\n"  # 7: same id, another name
        "t6,杨勇,+86 138 0013 8000,,,500238,county_duty,1\n",  # 8: t1's phone under another id
    )

    with pytest.raises(DirectoryError) as caught:
        await import_files(db, units, people, replace=True)  # replacing: the stored ranks are not in the way

    assert located(caught.value.errors) == {
        ("units.csv", 4, "code"),
        ("units.csv", 5, "parent_code"),
        ("units.csv", 6, "kind"),
        ("units.csv", 7, "code"),
        ("units.csv", 8, "kind"),
        ("people.csv", 3, "phone"),
        ("people.csv", 4, "role"),
        ("people.csv", 5, "unit_code"),
        ("people.csv", 6, "rank"),
        ("people.csv", 7, "name"),
        ("people.csv", 8, "phone"),
    }
    report = str(caught.value)
    assert "11 problem(s), nothing was imported" in report
    assert "units.csv line 5, parent_code 上级代码: 上级单位不存在 parent unit 500238999" in report
    assert "people.csv line 3, phone 手机: 手机号无效 '1380013'" in report
    assert await count_rows(db) == before


async def test_a_workbook_with_chinese_sheets_imports(db: Database, tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    notes = book.active
    assert notes is not None
    notes.title = "说明"
    notes.append(["每个单位一行；人员可以多行，每行一个职责。"])
    units = book.create_sheet("单位")
    units.append(["代码", "名称", "类型", "上级代码"])
    # Excel keeps codes and phone numbers typed in as numbers
    units.append([500238, "巫溪县", "区县", None])
    units.append([500238101, "凤凰镇", "乡镇/街道", 500238])
    units.append([500238101200, "青龙村", "村/社区", 500238101])
    units.append([50023810120001, "第1网格", "网格", 500238101200])
    people = book.create_sheet("人员")
    people.append(["编号", "姓名", "手机", "企业微信", "邮箱", "单位代码", "职责", "顺位", "备注"])
    people.append([None, "孙强", 13912340005, "sunqiang", None, 500238101200, "村（社区）负责人", 0, "村主任"])
    people.append([None, "孙强", 13912340005, "sunqiang", None, 50023810120001, "网格员", 1, None])
    people.append(["gw", "周杰", "139 1234 0006", None, None, 50023810120001, "网格员", 0, None])
    devices = book.create_sheet("设备")
    devices.append(["编号", "单位代码", "类型", "名称"])
    devices.append(["bz-500238101200", 500238101200, "应急广播", "青龙村应急广播"])
    path = tmp_path / "巫溪县名录.xlsx"
    book.save(path)

    result = await import_directory(db, await load_directory([path]), actor="admin", at=AT)

    assert (result.units_created, result.people_created, result.responsibilities, result.devices_created) == (
        4,
        2,
        3,
        1,
    )
    head = person_id_for_phone("+8613912340005")  # listed without an id: one is made from the phone
    assert await duties(db, "500238101200") == [(head, "village_head", 0)]
    assert await duties(db, "50023810120001") == [("gw", "grid_worker", 0), (head, "grid_worker", 1)]
    async with db.session() as s:
        grid = await s.get(OrgUnit, "50023810120001")
        device = await s.get(Device, "bz-500238101200")
        person = await s.get(Person, "gw")
    assert grid is not None
    assert grid.path == "/500238/500238101/500238101200/50023810120001/"
    assert device is not None
    assert device.kind == "broadcast_zone"
    assert person is not None
    assert person.phone == "+8613912340006"


async def test_workbook_problems_name_the_sheet_and_row(db: Database, tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "people"
    sheet.append(["id", "name", "phone", "unit_code", "role", "rank"])
    sheet.append(["a", "孙强", "12345", "500238", "county_duty", 0])
    path = tmp_path / "people.xlsx"
    book.save(path)

    with pytest.raises(DirectoryError) as caught:
        await import_files(db, path)

    assert [str(e) for e in caught.value.errors] == [
        "people.xlsx [people] row 2, phone 手机: 手机号无效 '12345' is not a valid phone number"
    ]


async def test_yaml_imports_with_paths_ranks_and_an_audit_entry(db: Database, tmp_path: Path) -> None:
    result = await import_directory(
        db, await load_directory([write(tmp_path / "county.yaml", BASE_YAML)]), actor="admin", at=AT
    )

    assert result.counts() == {
        "units_created": 4,
        "units_updated": 0,
        "people_created": 4,
        "people_updated": 0,
        "responsibilities": 5,
        "devices_created": 1,
        "devices_updated": 0,
        "paths_moved": 0,
        "responsibilities_added": 5,
        "responsibilities_updated": 0,
        "responsibilities_removed": 0,
    }
    assert await duties(db, "50023810120001") == [("gw", "grid_worker", 0), ("head", "grid_worker", 1)]
    async with db.session() as s:
        subtree = (
            await s.execute(select(col(OrgUnit.code)).where(col(OrgUnit.path).startswith("/500238/500238101/")))
        ).scalars()
        assert set(subtree) == {"500238101", "500238101200", "50023810120001"}
        event = (await s.execute(select(AuditEvent))).scalar_one()
        assert (event.kind, event.actor, event.data["people_created"]) == ("directory.imported", "admin", 4)
    assert (await audit.verify(db)).ok


async def test_people_file_alone_refers_to_units_already_imported(db: Database, tmp_path: Path) -> None:
    await import_files(db, write(tmp_path / "county.yaml", BASE_YAML))
    people = write(
        tmp_path / "people.csv",
        "name,phone,unit_code,role,rank\n周敏,13912340006,500238101,township_duty,1\n",
    )

    await import_files(db, people)

    # added to the list: the township's duty officer 赵敏 (rank 0) stays
    assert await duties(db, "500238101") == [
        ("tw", "township_duty", 0),
        (person_id_for_phone("+8613912340006"), "township_duty", 1),
    ]


async def test_reimport_updates_by_key_and_moves_paths_below_a_moved_unit(db: Database, tmp_path: Path) -> None:
    await import_files(db, write(tmp_path / "county.yaml", BASE_YAML))
    changed = write(
        tmp_path / "changes.yaml",
        """\
units:
  - {code: 500238102, name: 宁厂镇, kind: township, parent_code: 500238}
  - {code: 500238101200, name: 青龙新村, kind: village, parent_code: 500238102}
people:
  - {id: head, name: 孙强, phone: "13912340009", unit_code: "500238101200", role: village_head}
  - {id: gw2, name: 吴刚, phone: "13912340010", unit_code: "50023810120001", role: grid_worker}
""",
    )

    result = await import_directory(db, await load_directory([changed]), actor="admin", at=AT, replace=True)

    assert (result.units_created, result.units_updated, result.people_created, result.people_updated) == (1, 1, 1, 1)
    assert result.paths_moved == 1  # the grid, which the file did not list, follows its village
    async with db.session() as s:
        village = await s.get(OrgUnit, "500238101200")
        grid = await s.get(OrgUnit, "50023810120001")
        head = await s.get(Person, "head")
        kept = await s.get(Person, "gw")
    assert village is not None
    assert (village.name, village.parent_code) == ("青龙新村", "500238102")
    assert grid is not None
    assert grid.path == "/500238/500238102/500238101200/50023810120001/"
    assert head is not None
    assert head.phone == "+8613912340009"
    assert head.wecom_userid is None  # the row says what the person's contacts are now
    assert kept is not None  # people are never deleted by an import
    assert await duties(db, "50023810120001") == [("gw2", "grid_worker", 0)]
    assert await duties(db, "500238") == [("duty", "county_duty", 0)]  # units not in the file keep theirs
    assert (await count_rows(db))["AuditEvent"] == 2


# ---- adding to who answers for a unit, and replacing the list only when asked (issue 14 item 6) ----

TOWNSHIP_TEAM = """\
people:
  - {id: backup, name: 钱多, phone: "13912340005", unit_code: "500238101", role: township_duty, rank: 1}
"""


async def county_with_a_township_team(db: Database, tmp_path: Path) -> None:
    """凤凰镇 has its duty officer 赵敏 (rank 0) and a backup 钱多 (rank 1)."""
    await import_files(db, write(tmp_path / "county.yaml", BASE_YAML), write(tmp_path / "team.yaml", TOWNSHIP_TEAM))
    assert await duties(db, "500238101") == [("tw", "township_duty", 0), ("backup", "township_duty", 1)]


async def test_a_one_row_people_file_adds_and_keeps_the_duty_officer_and_backup(db: Database, tmp_path: Path) -> None:
    await county_with_a_township_team(db, tmp_path)
    one_row = write(
        tmp_path / "people.csv", "编号,姓名,手机,单位代码,职责,顺位\nnew,孙丽,13912340007,500238101,乡镇值班员,2\n"
    )

    result = await import_files(db, one_row)

    assert await duties(db, "500238101") == [
        ("tw", "township_duty", 0),
        ("backup", "township_duty", 1),
        ("new", "township_duty", 2),
    ]
    assert (result.responsibilities_added, result.responsibilities_updated, result.responsibilities_removed) == (
        1,
        0,
        0,
    )
    assert result.removed == ()


async def test_a_row_for_someone_already_on_the_list_updates_their_role_and_rank(db: Database, tmp_path: Path) -> None:
    await county_with_a_township_team(db, tmp_path)
    moved = write(
        tmp_path / "people.csv", "编号,姓名,手机,单位代码,职责,顺位\nbackup,钱多,13912340005,500238101,乡镇值班员,3\n"
    )

    result = await import_files(db, moved)

    assert await duties(db, "500238101") == [("tw", "township_duty", 0), ("backup", "township_duty", 3)]
    assert (result.responsibilities_added, result.responsibilities_updated) == (0, 1)


async def test_taking_a_rank_someone_keeps_is_refused_naming_them_and_the_way_to_replace(
    db: Database, tmp_path: Path
) -> None:
    await county_with_a_township_team(db, tmp_path)
    before = await count_rows(db)
    new_primary = write(
        tmp_path / "people.csv", "编号,姓名,手机,单位代码,职责,顺位\nnew,孙丽,13912340007,500238101,乡镇值班员,0\n"
    )

    with pytest.raises(DirectoryError) as caught:
        await import_files(db, new_primary)

    assert located(caught.value.errors) == {("people.csv", 2, "rank")}
    message = caught.value.errors[0].message
    assert "赵敏 (tw)" in message and "rank 0" in message and "--replace" in message
    assert await count_rows(db) == before


async def test_replacing_is_asked_for_the_check_names_who_goes_and_the_import_reports_them(
    db: Database, tmp_path: Path
) -> None:
    await county_with_a_township_team(db, tmp_path)
    new_primary = write(
        tmp_path / "people.csv", "编号,姓名,手机,单位代码,职责,顺位\nnew,孙丽,13912340007,500238101,乡镇值班员,0\n"
    )
    before = await count_rows(db)

    checked = await check_import(db, await load_directory([new_primary]), replace=True)

    assert [str(r) for r in checked.removed] == [
        "凤凰镇 500238101: 赵敏 (tw), township_duty 乡镇值班员, rank 顺位 0",
        "凤凰镇 500238101: 钱多 (backup), township_duty 乡镇值班员, rank 顺位 1",
    ]
    assert checked.responsibilities_removed == 2
    assert await count_rows(db) == before  # the check wrote nothing

    done = await import_files(db, new_primary, replace=True)

    assert done.removed == checked.removed and done.responsibilities_removed == 2
    assert await duties(db, "500238101") == [("new", "township_duty", 0)]
    async with db.session() as s:
        people = set((await s.execute(select(col(Person.id)))).scalars())
        entry = (await s.execute(select(AuditEvent).order_by(col(AuditEvent.seq).desc()).limit(1))).scalar_one()
    assert {"tw", "backup"} <= people  # off the list, not out of the directory
    assert entry.kind == "directory.imported"
    assert entry.data["responsibilities_removed"] == 2
    assert entry.data["removed"] == [str(r) for r in done.removed]
    assert await duties(db, "500238") == [("duty", "county_duty", 0)]  # units the file does not name keep theirs


async def test_the_command_line_adds_by_default_and_replaces_with_replace(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from config.cli.main import app

    await county_with_a_township_team(db, tmp_path)
    monkeypatch.setenv("JIAOYING_DATABASE_URL", db.url)
    monkeypatch.setenv("JIAOYING_CONFIG", str(tmp_path / "none.toml"))
    new_primary = write(
        tmp_path / "people.csv", "编号,姓名,手机,单位代码,职责,顺位\nnew,孙丽,13912340007,500238101,乡镇值班员,0\n"
    )
    runner = CliRunner()

    refused = await asyncio.to_thread(runner.invoke, app, ["import", str(new_primary)])
    assert refused.exit_code == 2
    assert "赵敏 (tw)" in refused.output and "--replace" in refused.output

    checked = await asyncio.to_thread(runner.invoke, app, ["import", "--replace", "--check", str(new_primary)])
    assert checked.exit_code == 0, checked.output
    assert "would remove: 凤凰镇 500238101: 赵敏 (tw)" in " ".join(checked.output.split())
    assert await duties(db, "500238101") == [("tw", "township_duty", 0), ("backup", "township_duty", 1)]

    done = await asyncio.to_thread(runner.invoke, app, ["import", "--replace", str(new_primary)])
    assert done.exit_code == 0, done.output
    said = " ".join(done.output.split())
    assert "responsibilities: 1 added, 2 removed" in said
    assert "removed: 凤凰镇 500238101: 钱多 (backup)" in said
    assert await duties(db, "500238101") == [("new", "township_duty", 0)]
