"""Reading the directory from CSV, Excel (.xlsx) and YAML files, with Chinese or English column names.

A row that cannot be read (an unknown kind, a phone that is not a number) is left out and reported in
`Directory.problems`; everything else is checked later by `directory_check.validate`, so that one run
reports every problem at once.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import phonenumbers
import yaml

from alerting.model.domain import DeviceKind, Role, UnitKind
from config.directory.model import DeviceRow, Directory, PersonRow, ResponsibilityRow, RowError, Source, UnitRow
from config.directory.text import UnreadableFile, decode_text, delimiter, unreadable_workbook

Table = Literal["units", "people", "devices"]
Numbered = Iterable[tuple[int, Sequence[object]]]  # rows with the line or row number a person would look up

# canonical column -> names a header may use; compared after _norm
_COLUMNS: dict[Table, dict[str, tuple[str, ...]]] = {
    "units": {
        "code": ("code", "代码", "编码"),
        "name": ("name", "名称"),
        "kind": ("kind", "类型", "层级"),
        "parent_code": ("parent_code", "上级代码", "上级编码"),
    },
    "people": {
        "id": ("id", "编号"),
        "name": ("name", "姓名"),
        "phone": ("phone", "手机", "手机号", "手机号码"),
        "wecom_userid": ("wecom_userid", "企业微信", "企业微信账号"),
        "email": ("email", "邮箱", "电子邮箱"),
        "unit_code": ("unit_code", "单位代码", "单位编码"),
        "role": ("role", "职责"),
        "rank": ("rank", "顺位"),
    },
    "devices": {
        "id": ("id", "编号"),
        "unit_code": ("unit_code", "单位代码", "单位编码"),
        "kind": ("kind", "类型"),
        "name": ("name", "名称"),
    },
}
_REQUIRED: dict[Table, tuple[str, ...]] = {
    "units": ("code", "name", "kind"),
    "people": ("name",),
    "devices": ("id", "unit_code", "kind", "name"),
}
_SHEETS: dict[str, Table] = {"单位": "units", "units": "units", "人员": "people", "people": "people"}
_SHEETS |= {"设备": "devices", "devices": "devices"}

# how fields are named in messages: the English key and the Chinese header
LABELS = {
    "code": "code 代码",
    "name": "name 名称/姓名",
    "kind": "kind 类型",
    "parent_code": "parent_code 上级代码",
    "id": "id 编号",
    "phone": "phone 手机",
    "wecom_userid": "wecom_userid 企业微信",
    "email": "email 邮箱",
    "unit_code": "unit_code 单位代码",
    "role": "role 职责",
    "rank": "rank 顺位",
}

_UNIT_KINDS: dict[str, UnitKind] = {k.value: k for k in UnitKind} | {k.label: k for k in UnitKind}
_UNIT_KINDS |= {"县": UnitKind.COUNTY, "区": UnitKind.COUNTY, "乡镇": UnitKind.TOWNSHIP, "乡": UnitKind.TOWNSHIP}
_UNIT_KINDS |= {"镇": UnitKind.TOWNSHIP, "街道": UnitKind.TOWNSHIP, "村": UnitKind.VILLAGE, "社区": UnitKind.VILLAGE}
_ROLES: dict[str, Role] = {r.value: r for r in Role} | {r.label: r for r in Role}
_ROLES |= {"村(社区)负责人": Role.VILLAGE_HEAD, "村负责人": Role.VILLAGE_HEAD, "社区负责人": Role.VILLAGE_HEAD}
_ROLES |= {"乡镇值班": Role.TOWNSHIP_DUTY, "县值班员": Role.COUNTY_DUTY, "县值班": Role.COUNTY_DUTY}
_DEVICE_KINDS: dict[str, DeviceKind] = {k.value: k for k in DeviceKind}
_DEVICE_KINDS |= {"预警器": DeviceKind.SIREN, "警报器": DeviceKind.SIREN, "高音喇叭": DeviceKind.SIREN}
_DEVICE_KINDS |= {"应急广播": DeviceKind.BROADCAST_ZONE, "广播": DeviceKind.BROADCAST_ZONE}
_DEVICE_KINDS |= {"卫星": DeviceKind.SATELLITE, "卫星终端": DeviceKind.SATELLITE}


def _norm(text: str) -> str:
    return text.replace("\ufeff", "").replace("\u3000", " ").strip().lower()


def cell_text(value: object) -> str:
    """A cell as text. Excel and YAML hand codes and phone numbers back as numbers; keep their digits."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).replace("\u3000", " ").strip()


def person_id_for_phone(phone: str) -> str:
    """A stable id for a person listed without one. Hashed, so the id does not spread the number into logs."""
    return "p-" + hashlib.sha256(phone.encode()).hexdigest()[:12]


def normalise_phone(raw: str) -> str | None:
    """E.164 for a number valid in China (or with its own +country code), else None."""
    try:
        number = phonenumbers.parse(raw, "CN")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def _lookup(words: Mapping[str, Any], raw: str) -> Any:
    return words.get(_norm(raw).replace("（", "(").replace("）", ")")) or words.get(_norm(raw))


@dataclass
class _Collector:
    units: list[UnitRow] = field(default_factory=list)
    people: list[PersonRow] = field(default_factory=list)
    responsibilities: list[ResponsibilityRow] = field(default_factory=list)
    devices: list[DeviceRow] = field(default_factory=list)
    problems: list[RowError] = field(default_factory=list)
    unreadable_units: set[str] = field(default_factory=set)

    def problem(self, source: Source | None, column: str | None, message: str) -> None:
        self.problems.append(RowError(source, LABELS.get(column or "", column), message))

    def directory(self) -> Directory:
        return Directory(
            units=tuple(self.units),
            people=tuple(self.people),
            responsibilities=tuple(self.responsibilities),
            devices=tuple(self.devices),
            problems=tuple(self.problems),
            unreadable_units=frozenset(self.unreadable_units),
        )

    def add(self, table: Table, row: Mapping[str, str], source: Source) -> None:
        {"units": self._unit, "people": self._person, "devices": self._device}[table](row, source)

    def _unit(self, row: Mapping[str, str], source: Source) -> None:
        code, raw_kind = row.get("code", ""), row.get("kind", "")
        kind: UnitKind | None = _lookup(_UNIT_KINDS, raw_kind)
        if kind is None:
            self.problem(source, "kind", f"类型未知 unknown unit kind {raw_kind!r} (county/township/village/grid)")
            if code:
                self.unreadable_units.add(code)
            return
        parent = row.get("parent_code", "") or None
        self.units.append(UnitRow(code=code, name=row.get("name", ""), kind=kind, parent_code=parent, source=source))

    def _person(self, row: Mapping[str, str], source: Source) -> None:
        raw_phone = row.get("phone", "")
        phone = normalise_phone(raw_phone) if raw_phone else None
        if raw_phone and phone is None:
            self.problem(source, "phone", f"手机号无效 {raw_phone!r} is not a valid phone number")
            return
        person_id = row.get("id", "") or (person_id_for_phone(phone) if phone else "")
        if not person_id:
            self.problem(source, "id", "编号和手机都为空 needs an id or a phone number to tell who this is")
            return
        self.people.append(
            PersonRow(
                id=person_id,
                name=row.get("name", ""),
                phone=phone,
                wecom_userid=row.get("wecom_userid", "") or None,
                email=row.get("email", "") or None,
                source=source,
            )
        )
        self._responsibility(person_id, row, source)

    def _responsibility(self, person_id: str, row: Mapping[str, str], source: Source) -> None:
        unit_code, raw_role, raw_rank = row.get("unit_code", ""), row.get("role", ""), row.get("rank", "")
        if not unit_code:
            if raw_role or raw_rank:
                self.problem(source, "unit_code", "有职责但没有单位代码 a role or rank is given but no unit code")
            return
        role: Role | None = _lookup(_ROLES, raw_role)
        if role is None:
            choices = ", ".join(f"{r.value}/{r.label}" for r in Role)
            self.problem(source, "role", f"职责未知 unknown role {raw_role!r} (one of {choices})")
        try:
            rank = int(raw_rank) if raw_rank else 0
        except ValueError:
            self.problem(
                source, "rank", f"顺位应为整数 rank {raw_rank!r} is not a whole number (0 primary, 1.. backups)"
            )
            return
        if role is not None:
            self.responsibilities.append(ResponsibilityRow(unit_code, person_id, role, rank, source))

    def _device(self, row: Mapping[str, str], source: Source) -> None:
        raw_kind = row.get("kind", "")
        kind: DeviceKind | None = _lookup(_DEVICE_KINDS, raw_kind)
        if kind is None:
            choices = ", ".join(k.value for k in DeviceKind)
            self.problem(source, "kind", f"设备类型未知 unknown device kind {raw_kind!r} (one of {choices})")
            return
        self.devices.append(DeviceRow(row.get("id", ""), row.get("unit_code", ""), kind, row.get("name", ""), source))


def _columns(table: Table) -> dict[str, str]:
    return {_norm(alias): canon for canon, aliases in _COLUMNS[table].items() for alias in aliases}


def classify(header: Iterable[str]) -> Table | None:
    """Which table a header belongs to: people have phones or roles, devices belong to a unit, units have codes."""
    names = {_norm(h) for h in header}
    people = _columns("people")
    if any(people.get(n) in ("phone", "role", "rank", "wecom_userid") for n in names) or "姓名" in names:
        return "people"
    if any(_columns("devices").get(n) == "unit_code" for n in names):
        return "devices"
    if any(_columns("units").get(n) == "code" for n in names):
        return "units"
    return None


def _read_table(
    out: _Collector,
    table: Table,
    rows: Numbered,
    header: tuple[int, Sequence[object]],
    source: Callable[[int], Source],
) -> None:
    header_line, header_cells = header
    known = _columns(table)
    # unknown columns (备注, 序号…) are left alone: spreadsheets kept by hand often have them
    positions = [known.get(_norm(cell_text(c))) for c in header_cells]
    missing = [c for c in _REQUIRED[table] if c not in positions]
    if table == "people" and "id" not in positions and "phone" not in positions:
        missing.append("phone")
    if missing:
        for column in missing:
            out.problem(source(header_line), column, "缺少此列 this column is missing from the header")
        return
    for line, cells in rows:
        values = {col: cell_text(v) for col, v in zip(positions, cells, strict=False) if col is not None}
        if any(values.values()):
            out.add(table, values, source(line))


def _split_header(rows: Numbered) -> tuple[tuple[int, Sequence[object]] | None, Numbered]:
    """The first non-empty row is the header; the rest follow it."""
    numbered = iter(rows)
    for line, cells in numbered:
        if any(cell_text(c) for c in cells):
            return (line, cells), numbered
    return None, ()


def read_csv(path: Path, out: _Collector) -> None:
    try:
        text = decode_text(path.name, path.read_bytes())
    except UnreadableFile as exc:
        out.problem(Source(path.name, 0), None, str(exc))
        return
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter(text))
    # the reader's line count after a row is the line an editor shows, also when a quoted cell spans lines
    header, rest = _split_header((reader.line_num, row) for row in reader)
    if header is None:
        out.problem(Source(path.name, 1), None, "文件为空 the file is empty")
        return
    table = classify(cell_text(c) for c in header[1])
    if table is None:
        out.problem(Source(path.name, header[0]), None, _unknown_header(header[1]))
        return
    _read_table(out, table, rest, header, lambda line: Source(path.name, line))


def _unknown_header(cells: Sequence[object]) -> str:
    found = ", ".join(cell_text(c) for c in cells if cell_text(c))
    return (
        f"无法识别表头 cannot tell units, people or devices from the header ({found}); expected e.g. "
        "代码,名称,类型,上级代码 / 编号,姓名,手机,企业微信,邮箱,单位代码,职责,顺位 / 编号,单位代码,类型,名称"
    )


def read_xlsx(path: Path, out: _Collector) -> None:
    import openpyxl  # only needed for workbooks; keeps CSV-only use light

    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises zipfile, KeyError and its own errors for broken files
        out.problem(Source(path.name, 0), None, unreadable_workbook(path.name, exc))
        return
    try:
        for sheet in workbook.worksheets:
            title = str(sheet.title)
            header, rest = _split_header(enumerate(sheet.iter_rows(values_only=True), start=1))
            named = _SHEETS.get(_norm(title))
            if header is None:
                continue
            table = named or classify(cell_text(c) for c in header[1])
            if table is None:
                continue  # an instructions sheet (说明) or similar
            _read_table(out, table, rest, header, _sheet_source(path.name, title))
    finally:
        workbook.close()


def _sheet_source(file: str, sheet: str) -> Callable[[int], Source]:
    return lambda row: Source(file, row, sheet)


def read_yaml(path: Path, out: _Collector) -> None:
    try:
        text = decode_text(path.name, path.read_bytes())
    except UnreadableFile as exc:
        out.problem(Source(path.name, 0), None, str(exc))
        return
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        out.problem(Source(path.name, mark.line + 1 if mark else 0), None, f"YAML 格式错误 YAML syntax error: {exc}")
        return
    finally:
        loader.dispose()
    if not isinstance(data, dict) or not isinstance(node, yaml.MappingNode):
        out.problem(Source(path.name, 1), None, "应为 units/people/devices 三个列表 expected a mapping of lists")
        return
    for key_node, value_node in node.value:
        key = str(key_node.value)
        if key not in _COLUMNS:
            out.problem(
                Source(path.name, key_node.start_mark.line + 1), key, "未知的键 unknown key; use units/people/devices"
            )
            continue
        items = data[key] or []
        if not isinstance(items, list) or not isinstance(value_node, yaml.SequenceNode):
            out.problem(Source(path.name, key_node.start_mark.line + 1), key, "应为列表 expected a list")
            continue
        _read_yaml_items(out, key, path.name, items, value_node.value)


def _read_yaml_items(out: _Collector, table: Table, file: str, items: list[Any], nodes: list[yaml.Node]) -> None:
    known = _columns(table)
    for item, item_node in zip(items, nodes, strict=True):
        source = Source(file, item_node.start_mark.line + 1)
        if not isinstance(item, dict):
            out.problem(source, None, "应为键值对 expected a mapping of fields")
            continue
        values: dict[str, str] = {}
        for k, v in item.items():
            column = known.get(_norm(str(k)))
            if column is None:
                out.problem(source, str(k), f"未知字段 unknown field (expected {', '.join(_COLUMNS[table])})")
            else:
                values[column] = cell_text(v)
        out.add(table, values, source)


_READERS: dict[str, Callable[[Path, _Collector], None]] = {
    ".csv": read_csv,
    ".xlsx": read_xlsx,
    ".xlsm": read_xlsx,
    ".yaml": read_yaml,
    ".yml": read_yaml,
}


def read_directory(paths: Sequence[Path]) -> Directory:
    """Read the files into one directory. Blocking: from async code use `load_directory`."""
    out = _Collector()
    for path in paths:
        reader = _READERS.get(path.suffix.lower())
        if reader is None:
            out.problem(Source(path.name, 0), None, "不支持的文件类型 unsupported file type; use .csv, .xlsx or .yaml")
            continue
        try:
            reader(path, out)
        except OSError as exc:
            out.problem(Source(path.name, 0), None, f"无法读取文件 cannot read the file: {exc.strerror or exc}")
    return out.directory()


async def load_directory(paths: Sequence[Path]) -> Directory:
    """Read CSV, .xlsx and YAML files in a worker thread. Rows that could not be read are in `problems`."""
    return await asyncio.to_thread(read_directory, list(paths))
