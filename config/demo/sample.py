"""The sample county: 巫溪县 with its 32 real townships, and synthetic villages, grids, people and devices.

Everything after the townships is made up, from one seeded random generator, so the demo, the tests and
the benchmarks see the same county on every run. The phone numbers are random valid Chinese mobiles and
may belong to real people: never send to them with real providers configured.
"""

from __future__ import annotations

import csv
import io
import random
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from alerting.model.domain import DeviceKind, Role, UnitKind
from config.directory.model import DeviceRow, Directory, PersonRow, ResponsibilityRow, UnitRow
from config.directory.parse import normalise_phone

COUNTY_CODE = "500238"
COUNTY_NAME = "巫溪县"
COUNTY_DUTY_ROOM = "巫溪县应急值班室"
MAX_GRIDS_PER_VILLAGE = 99  # grid code = village code + 2 digits

_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程苏魏吕丁任沈姚卢"
    "姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛段雷侯龙史陶黎贺顾毛郝龚邵万覃武戴向汤冉"
)
_GIVEN = (
    "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华红兰玉文建国志成德福林"
    "春海云飞斌波鹏辉亮琴梅燕莉婷雪琳宇浩凯鑫俊佳欣怡蓉兵川渝江峰"
)
# village names are a landscape word and a place word, as in the hills of 巫溪: 青龙村, 石坪村, 黄岩村
_VILLAGE_FIRST = (
    "青龙石桥松柏红岩白马花凤鹤大小新双长黄金银水田杨柳竹梨桃茶云观庙寨峰鹰牛羊鱼凉兴太平和安宁民福丰高中上东西南北"
)
_VILLAGE_SECOND = "坪坝湾河沟岩山桥溪垭坡园池塘岭峡口院林槽台湖田坎梁岗"
_COMMUNITY_FIRST = "滨新城东西南北文春阳锦花和兴龙凤宁柏盐泉"
_COMMUNITY_SECOND = "河城门街园苑湖阳安华江山桥峰光泉源丰"
_MOBILE_PREFIXES = tuple(
    f"1{n}" for n in (30, 31, 32, 33, 35, 36, 37, 38, 39, 50, 51, 52, 55, 56, 57, 58, 59, 77, *range(80, 90), 99)
)
_WECOM_SHARE = 0.85  # about this many people have a WeCom account
_EMAIL_DOMAIN = "yj.wuxi.example"  # a reserved domain: mail to it goes nowhere


@dataclass(frozen=True)
class Township:
    code: str
    name: str

    @property
    def is_street(self) -> bool:
        return self.name.endswith("街道")


@cache
def wuxi_townships() -> tuple[Township, ...]:
    """The 32 townships and streets of 巫溪县 (modood/Administrative-divisions-of-China, WTFPL)."""
    # next to this module rather than importlib.resources: the editable install maps `config` as a
    # namespace package when run from outside the checkout, and resources cannot read those
    text = (Path(__file__).parent / "data" / "wuxi_townships.csv").read_text(encoding="utf-8")
    return tuple(Township(row["code"], row["name"]) for row in csv.DictReader(io.StringIO(text)))


@dataclass
class _Builder:
    rng: random.Random
    units: list[UnitRow] = field(default_factory=list)
    people: list[PersonRow] = field(default_factory=list)
    responsibilities: list[ResponsibilityRow] = field(default_factory=list)
    devices: list[DeviceRow] = field(default_factory=list)
    phones: set[str] = field(default_factory=set)

    def unit(self, code: str, name: str, kind: UnitKind, parent: str | None) -> None:
        self.units.append(UnitRow(code, name, kind, parent))

    def person(self, person_id: str, name: str | None = None, *, email: bool = False) -> str:
        wecom = f"u{len(self.people) + 1:05d}" if self.rng.random() < _WECOM_SHARE else None
        self.people.append(
            PersonRow(
                id=person_id,
                name=name or self.name(),
                phone=self.phone(),
                wecom_userid=wecom,
                email=f"{person_id}@{_EMAIL_DOMAIN}" if email else None,
            )
        )
        return person_id

    def responsible(self, unit_code: str, person_id: str, role: Role, rank: int) -> None:
        self.responsibilities.append(ResponsibilityRow(unit_code, person_id, role, rank))

    def name(self) -> str:
        given = "".join(self.rng.choice(_GIVEN) for _ in range(self.rng.choice((1, 2, 2))))
        return self.rng.choice(_SURNAMES) + given

    def phone(self) -> str:
        while True:
            number = normalise_phone(self.rng.choice(_MOBILE_PREFIXES) + f"{self.rng.randrange(10**8):08d}")
            if number is not None and number not in self.phones:
                self.phones.add(number)
                return number


def _spread(rng: random.Random, total: int, slots: int, cap: int) -> list[int]:
    """`total` items over `slots`, at least one each (when there are enough), none above `cap`."""
    counts = [1] * slots if total >= slots else [0] * slots
    if total < slots:
        for i in rng.sample(range(slots), total):
            counts[i] = 1
        return counts
    open_slots = [i for i in range(slots) if counts[i] < cap]
    for _ in range(total - slots):
        i = rng.choice(open_slots)
        counts[i] += 1
        if counts[i] >= cap:
            open_slots.remove(i)
    return counts


def _place_names(rng: random.Random, count: int, street: bool) -> list[str]:
    first, second = (_COMMUNITY_FIRST, _COMMUNITY_SECOND) if street else (_VILLAGE_FIRST, _VILLAGE_SECOND)
    suffix = "社区" if street else "村"
    if count > len(first) * len(second) // 2:
        raise ValueError(f"too many villages for one township ({count}); names would run out")
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        a, b = rng.choice(first), rng.choice(second)
        name = a + b + suffix
        if a != b and name not in seen:
            seen.add(name)
            names.append(name)
    return names


def generate_sample(seed: int = 2024, villages: int = 300, grids: int = 1000) -> Directory:
    """The sample county, the same for the same arguments. Blocking (reads package data), but quick."""
    if villages < 1 or grids < villages:
        raise ValueError("need at least one village and at least one grid per village")
    if grids > villages * MAX_GRIDS_PER_VILLAGE:
        raise ValueError(f"at most {MAX_GRIDS_PER_VILLAGE} grids per village")
    rng = random.Random(seed)  # noqa: S311 - a reproducible sample, not a secret
    b = _Builder(rng)
    townships = wuxi_townships()

    b.unit(COUNTY_CODE, COUNTY_NAME, UnitKind.COUNTY, None)
    b.responsible(COUNTY_CODE, b.person(f"cd-{COUNTY_CODE}", COUNTY_DUTY_ROOM, email=True), Role.COUNTY_DUTY, 0)
    b.responsible(COUNTY_CODE, b.person(f"cb-{COUNTY_CODE}", email=True), Role.COUNTY_DUTY, 1)

    # statistical codes number communities (社区) from 001 and villages (村) from 200
    per_township = _spread(rng, villages, len(townships), cap=199)
    village_units: list[tuple[str, str]] = []
    for township, count in zip(townships, per_township, strict=True):
        b.unit(township.code, township.name, UnitKind.TOWNSHIP, COUNTY_CODE)
        b.responsible(township.code, b.person(f"td-{township.code}", email=True), Role.TOWNSHIP_DUTY, 0)
        b.responsible(township.code, b.person(f"tb-{township.code}", email=True), Role.TOWNSHIP_DUTY, 1)
        first_number = 1 if township.is_street else 200
        for i, name in enumerate(_place_names(rng, count, township.is_street)):
            code = f"{township.code}{first_number + i:03d}"
            b.unit(code, name, UnitKind.VILLAGE, township.code)
            village_units.append((code, name))

    per_village = _spread(rng, grids, len(village_units), cap=MAX_GRIDS_PER_VILLAGE)
    for (code, name), count in zip(village_units, per_village, strict=True):
        head = b.person(f"vh-{code}")
        deputy = b.person(f"vd-{code}")
        b.responsible(code, head, Role.VILLAGE_HEAD, 0)
        b.responsible(code, deputy, Role.VILLAGE_HEAD, 1)
        b.devices.append(DeviceRow(f"siren-{code}", code, DeviceKind.SIREN, f"{name}预警器"))
        b.devices.append(DeviceRow(f"bz-{code}", code, DeviceKind.BROADCAST_ZONE, f"{name}应急广播"))
        for n in range(1, count + 1):
            grid = f"{code}{n:02d}"
            b.unit(grid, f"第{n}网格", UnitKind.GRID, code)
            b.responsible(grid, b.person(f"gw-{grid}"), Role.GRID_WORKER, 0)
            # the deputy head stands in for every grid worker of the village, in the grid worker's role
            b.responsible(grid, deputy, Role.GRID_WORKER, 1)

    return Directory(
        units=tuple(b.units),
        people=tuple(b.people),
        responsibilities=tuple(b.responsibilities),
        devices=tuple(b.devices),
    )
