"""Files as Excel and WPS really save them: "Unicode 文本" (UTF-16, tabs) is read; binary is refused by name, saying
which encodings are read and what to do, through `jiaoying import`, the roster import and the console's upload."""

from __future__ import annotations

import asyncio
import codecs
import io
from pathlib import Path

import openpyxl
import pytest
from sqlalchemy import func, select
from sqlmodel import col
from typer.testing import CliRunner

from alerting.model.clock import ManualClock
from alerting.store.db import Database
from alerting.store.tables import DutyShift, Person, Responsibility
from config.directory import DirectoryError, import_directory, load_directory
from config.directory.importer import FileImporter
from config.directory.rosters import RosterError, import_roster, load_roster
from tests.conftest import SmallCounty

PEOPLE = "编号,姓名,手机,单位代码,职责,顺位\r\nnew-gw,新网格员,13900002001,50023810100101,网格员,2\r\n"
ROSTER = "单位代码,值班人员,顺位,开始,结束\r\n500238101,tw-duty,值班,2026-07-01 08:00,2026-07-01 20:00\r\n"


def unicode_text(csv_text: str) -> bytes:
    """Excel's 另存为 "Unicode 文本 (*.txt)": UTF-16 LE with a BOM, columns separated by tabs."""
    return codecs.BOM_UTF16_LE + csv_text.replace(",", "\t").encode("utf-16-le")


def workbook_bytes() -> bytes:
    book = openpyxl.Workbook()
    book.active.append(["编号", "姓名", "手机"])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


BINARY = {
    "an .xlsx saved under a .csv name": (workbook_bytes, ".xlsx"),
    "an old .xls workbook": (lambda: b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(range(256)) * 4, ".xls"),
    "a photo": (lambda: b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01" + bytes(range(256)) * 4, None),
    "UTF-16 without its BOM": (lambda: PEOPLE.encode("utf-16-le"), None),
}


def assert_names_file_encodings_and_fix(message: str, name: str, hint: str | None) -> None:
    assert message.startswith(f"{name}:"), message
    assert "UTF-8" in message and "UTF-16" in message and "GBK" in message  # what is read
    assert "CSV UTF-8" in message  # what to do
    assert "codec" not in message  # not Python's words
    if hint:
        assert hint in message


async def test_unicode_text_from_excel_imports_like_csv(db: Database, county: SmallCounty, tmp_path: Path) -> None:
    path = tmp_path / "网格员.csv"
    path.write_bytes(unicode_text(PEOPLE))

    result = await import_directory(db, await load_directory([path]), actor="admin", at=ManualClock().now())

    assert (result.people_created, result.responsibilities_added) == (1, 1)
    async with db.session() as s:
        person = await s.get(Person, "new-gw")
        duty = await s.scalar(
            select(func.count()).where(
                col(Responsibility.person_id) == "new-gw", col(Responsibility.unit_code) == "50023810100101"
            )
        )
    assert person is not None and person.name == "新网格员" and person.phone == "+8613900002001"
    assert duty == 1


async def test_a_roster_saved_as_unicode_text_imports(db: Database, county: SmallCounty, tmp_path: Path) -> None:
    path = tmp_path / "值班表.csv"
    path.write_bytes(unicode_text(ROSTER))

    done = await import_roster(db, await load_roster([path]), actor="admin", at=ManualClock().now())

    assert done.counts()["shifts"] == 1
    async with db.session() as s:
        assert await s.scalar(select(func.count()).select_from(DutyShift)) == 1


@pytest.mark.parametrize("what", BINARY)
async def test_binary_is_refused_naming_the_file_what_is_read_and_the_fix(
    what: str, db: Database, county: SmallCounty, tmp_path: Path
) -> None:
    make, hint = BINARY[what]
    path = tmp_path / "名册.csv"
    path.write_bytes(make())

    with pytest.raises(DirectoryError) as refused:
        await import_directory(db, await load_directory([path]), actor="admin", at=ManualClock().now())
    (problem,) = refused.value.errors
    assert problem.source is not None and problem.source.file == "名册.csv"
    assert_names_file_encodings_and_fix(problem.message, "名册.csv", hint)

    with pytest.raises(RosterError) as roster_refused:
        await import_roster(db, await load_roster([path]), actor="admin", at=ManualClock().now())
    (problem,) = roster_refused.value.errors
    assert_names_file_encodings_and_fix(problem.message, "名册.csv", hint)


async def test_a_workbook_that_is_not_one_is_named_with_the_fix(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "人员.xlsx"
    path.write_bytes(PEOPLE.encode("gbk"))  # a CSV renamed to .xlsx

    directory = await load_directory([path])

    (problem,) = directory.problems
    assert problem.message.startswith("人员.xlsx: 无法打开工作簿")
    assert "CSV UTF-8" in problem.message and ".xlsx" in problem.message


async def test_the_command_line_says_it_in_one_line_per_file_and_writes_nothing(
    db: Database, county: SmallCounty, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from config.cli.main import app

    monkeypatch.setenv("JIAOYING_DATABASE_URL", db.url)
    monkeypatch.setenv("JIAOYING_CONFIG", str(tmp_path / "none.toml"))
    photo = tmp_path / "照片.csv"
    photo.write_bytes(BINARY["a photo"][0]())
    good = tmp_path / "people.csv"
    good.write_text(PEOPLE, encoding="utf-8")

    refused = await asyncio.to_thread(CliRunner().invoke, app, ["import", str(good), str(photo)])

    assert refused.exit_code == 2
    said = " ".join(refused.output.split())
    assert "照片.csv: 无法读取 cannot read this file as text; read encodings are UTF-8" in said
    assert "save it as 'CSV UTF-8'" in said
    assert "Traceback" not in refused.output
    async with db.session() as s:
        assert await s.get(Person, "new-gw") is None  # the good file was not imported on its own


async def test_the_console_upload_reads_unicode_text_and_names_what_it_cannot(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    importer = FileImporter(db, clock)

    read = await importer.check("people", "网格员.txt.csv", unicode_text(PEOPLE))
    refused = await importer.check("people", "网格员.csv", workbook_bytes())

    assert read.ok and read.counts["people_created"] == 1
    assert not refused.ok
    (problem,) = refused.problems
    assert_names_file_encodings_and_fix(problem.message, "网格员.csv", ".xlsx")
