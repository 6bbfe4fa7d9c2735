"""The directory in a real browser: an admin imports a file in two steps; a township officer sees only their own.

The new village goes under 宁厂镇 (500238102), not 凤凰镇, so that the alerts other tests send to 凤凰镇
on the shared server reach the same people as before.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from playwright.sync_api import Page, expect

from alerting.model.clock import SHANGHAI
from tests.browser.shots import screenshot

VILLAGE = "500238102901"
UNITS_BAD = (
    "代码,名称,类型,上级代码\n"
    f"{VILLAGE},叫应测试村,村,500238102\n"
    f"{VILLAGE}01,叫应测试村第1网格,网格,{VILLAGE}\n"
    f"{VILLAGE}02,叫应测试村第2网格,网格,50023810299999\n"  # row 4: a parent nobody has
)
PEOPLE = f"编号,姓名,手机,单位代码,职责,顺位\njy-test-head,测试村主任甲,13312340987,{VILLAGE},村负责人,0\n"


def check_file(page: Page, kind_label: str, path: Path) -> None:
    page.goto("/console/directory/import")
    page.get_by_label(kind_label).check()
    page.locator("#file").set_input_files(str(path))
    page.get_by_role("button", name="检查文件").click()


def test_an_admin_imports_after_fixing_the_bad_row_and_the_new_unit_shows(
    sign_in: Callable[[str], Page], tmp_path: Path
) -> None:
    page = sign_in("admin")
    bad = tmp_path / "新村.csv"
    bad.write_text(UNITS_BAD, encoding="utf-8")

    check_file(page, "单位（区县、乡镇、村社区、网格）", bad)

    problems = page.get_by_test_id("problems")
    expect(problems).to_contain_text("有 1 处错误，未写入任何数据")
    row = problems.locator("tbody tr")
    expect(row).to_have_count(1)
    expect(row.locator("td").nth(0)).to_have_text("4")
    expect(row.locator("td").nth(1)).to_contain_text("parent_code 上级代码")
    expect(row.locator("td").nth(2)).to_contain_text("50023810299999")
    expect(page.get_by_test_id("rows-read")).to_have_text("3")
    expect(page.get_by_role("button", name="确认导入")).to_have_count(0)
    screenshot(page, "directory-import-check")

    page.goto(f"/console/directory?q={VILLAGE}")
    expect(page.get_by_text("没有找到")).to_be_visible()  # the check wrote nothing

    fixed = tmp_path / "新村.csv"
    fixed.write_text(UNITS_BAD.replace("50023810299999", VILLAGE), encoding="utf-8")
    check_file(page, "单位（区县、乡镇、村社区、网格）", fixed)
    expect(page.get_by_test_id("problems")).to_have_count(0)
    expect(page.locator("dl.facts")).to_contain_text("新增单位")
    page.get_by_role("button", name="确认导入").click()
    expect(page.get_by_test_id("notice")).to_contain_text("已导入 新村.csv：新增单位 3")

    people = tmp_path / "测试村人员.csv"
    people.write_text(PEOPLE, encoding="utf-8")
    check_file(page, "人员（网格员、村负责人、值班员及其负责单位）", people)
    page.get_by_role("button", name="确认导入").click()
    expect(page.get_by_test_id("notice")).to_contain_text("新增人员 1")

    page.goto("/console/directory/units/500238102")
    page.get_by_role("link", name="叫应测试村").click()
    expect(page.get_by_test_id("unit-name")).to_contain_text("叫应测试村")
    expect(page.get_by_test_id("unit-people")).to_contain_text("测试村主任甲")
    expect(page.get_by_test_id("unit-people")).to_contain_text("+8613312340987")
    expect(page.get_by_test_id("units")).to_contain_text("叫应测试村第2网格")

    # a roster covering the next six hours only: the rest of the day shows as a gap
    now = datetime.now(SHANGHAI).replace(second=0, microsecond=0)
    span = f"{now - timedelta(hours=1):%Y-%m-%d %H:%M},{now + timedelta(hours=6):%Y-%m-%d %H:%M}"
    roster = tmp_path / "宁厂镇值班表.csv"
    roster.write_text(f"单位代码,值班人员,顺位,开始,结束\n500238102,13312340987,值班,{span}\n", encoding="utf-8")
    check_file(page, "值班表（乡镇和县的值班班次）", roster)
    page.get_by_role("button", name="确认导入").click()
    expect(page.get_by_test_id("notice")).to_contain_text("班次 1")
    page.goto("/console/directory/rosters?only=gaps")
    ningchang = page.locator('tr[data-unit="500238102"]')
    expect(ningchang).to_have_class("uncovered")
    expect(ningchang.locator("td").nth(1)).to_contain_text("测试村主任甲")
    expect(ningchang.locator("td").nth(3)).to_contain_text("（18.0 小时）")


def test_the_duty_room_may_read_but_not_import(sign_in: Callable[[str], Page]) -> None:
    page = sign_in("duty")
    page.goto("/console/directory")
    expect(page.get_by_test_id("unit-name")).to_contain_text("巫溪县")
    expect(page.get_by_role("link", name="导入")).to_have_count(0)
    page.goto("/console/directory/import")
    expect(page.get_by_text("只有管理员可以导入通讯录")).to_be_visible()
    page.goto("/console/directory/rosters")
    county = page.locator('tr[data-unit="500238"]')
    expect(county).to_contain_text("巫溪县")
    expect(county.locator("td").nth(4)).to_contain_text("+86")  # the duty room can call whoever stands in
    expect(page.locator('tr[data-unit="500238101"]')).to_contain_text("凤凰镇")
    screenshot(page, "directory-rosters")


def test_a_township_officer_sees_only_their_townships_units_and_people(sign_in: Callable[[str], Page]) -> None:
    page = sign_in("fenghuang")
    page.goto("/console/directory")
    expect(page.get_by_test_id("unit-name")).to_contain_text("凤凰镇")
    villages = page.get_by_test_id("units").locator("tbody tr")
    expect(villages.first).to_be_visible()
    for code in villages.locator("td:nth-child(2)").all_inner_texts():
        assert code.startswith("500238101"), code
    screenshot(page, "directory")

    page.goto("/console/directory?q=宁厂")
    expect(page.get_by_text("没有找到")).to_be_visible()
    page.goto("/console/directory/units/500238102")
    expect(page.get_by_text("不在你负责的范围内")).to_be_visible()

    page.goto("/console/directory/people")
    links = page.get_by_test_id("people").locator("tbody td:nth-child(5) a")
    expect(links.first).to_be_visible()
    for href in links.evaluate_all("els => els.map(e => e.getAttribute('href'))"):
        assert href.startswith("/console/directory/units/500238101"), href

    page.goto("/console/directory/devices")
    units = page.get_by_test_id("devices").locator("tbody td:nth-child(4) a")
    expect(units.first).to_be_visible()
    for href in units.evaluate_all("els => els.map(e => e.getAttribute('href'))"):
        assert href.startswith("/console/directory/units/500238101"), href
