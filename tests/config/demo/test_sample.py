"""The sample county the demo and the benchmarks use: 巫溪县, the same on every run."""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlmodel import col

import config.demo
from alerting.model.domain import DeviceKind, Role, UnitKind
from alerting.store.db import Database
from alerting.store.tables import Device, OrgUnit, Person, Responsibility
from config.demo.sample import COUNTY_CODE, COUNTY_DUTY_ROOM, generate_sample
from config.directory import import_directory, normalise_phone, validate


def test_the_same_seed_gives_the_same_county_and_another_seed_another() -> None:
    assert generate_sample() == generate_sample(2024)
    other = generate_sample(7)
    assert other != generate_sample()
    assert [u.name for u in other.units] != [u.name for u in generate_sample().units]


def test_the_townships_are_the_32_real_ones_of_wuxi() -> None:
    data = Path(config.demo.__file__).parent / "data" / "wuxi_townships.csv"
    with data.open(encoding="utf-8") as f:
        real = {row["code"]: row["name"] for row in csv.DictReader(f)}

    townships = {u.code: u.name for u in generate_sample().units if u.kind is UnitKind.TOWNSHIP}

    assert len(townships) == 32
    assert townships == real
    assert townships["500238001"] == "宁河街道"
    assert townships["500238118"] == "红池坝镇"


def test_default_sizes_and_codes_follow_the_hierarchy() -> None:
    sample = generate_sample()
    units = {u.code: u for u in sample.units}
    by_kind = Counter(u.kind for u in sample.units)
    assert by_kind == {UnitKind.COUNTY: 1, UnitKind.TOWNSHIP: 32, UnitKind.VILLAGE: 300, UnitKind.GRID: 1000}

    grids_per_village: Counter[str] = Counter()
    names_per_township: defaultdict[str, list[str]] = defaultdict(list)
    for u in sample.units:
        if u.kind is UnitKind.VILLAGE:
            assert u.parent_code is not None
            assert len(u.code) == 12
            assert u.code.startswith(u.parent_code)
            street = units[u.parent_code].name.endswith("街道")
            assert u.name.endswith("社区" if street else "村")
            names_per_township[u.parent_code].append(u.name)
        if u.kind is UnitKind.GRID:
            assert u.parent_code is not None
            assert len(u.code) == 14
            assert u.code.startswith(u.parent_code)
            assert u.name == f"第{int(u.code[-2:])}网格"
            grids_per_village[u.parent_code] += 1
    assert all(len(names) == len(set(names)) for names in names_per_township.values())
    assert len(grids_per_village) == 300
    assert min(grids_per_village.values()) >= 1


def test_every_unit_has_someone_to_answer_and_a_backup() -> None:
    sample = generate_sample()
    ranks: defaultdict[str, set[int]] = defaultdict(set)
    for r in sample.responsibilities:
        ranks[r.unit_code].add(r.rank)
    assert all(ranks[u.code] >= {0, 1} for u in sample.units)

    people = {p.id: p for p in sample.people}
    county = [r for r in sample.responsibilities if r.unit_code == COUNTY_CODE]
    assert {(people[r.person_id].name, r.role, r.rank) for r in county if r.rank == 0} == {
        (COUNTY_DUTY_ROOM, Role.COUNTY_DUTY, 0)
    }
    grid_roles = Counter((r.role, r.rank) for r in sample.responsibilities if len(r.unit_code) == 14)
    assert grid_roles == {(Role.GRID_WORKER, 0): 1000, (Role.GRID_WORKER, 1): 1000}


def test_people_can_be_reached() -> None:
    sample = generate_sample()
    phones = [p.phone for p in sample.people]
    assert len(set(phones)) == len(phones)
    assert all(p is not None and p.startswith("+861") and normalise_phone(p) == p for p in phones)
    wecom_share = sum(p.wecom_userid is not None for p in sample.people) / len(sample.people)
    assert 0.8 < wecom_share < 0.9
    duty = {r.person_id for r in sample.responsibilities if r.role in (Role.TOWNSHIP_DUTY, Role.COUNTY_DUTY)}
    assert all((p.email is not None) == (p.id in duty) for p in sample.people)


def test_every_village_has_a_siren_and_a_broadcast_zone() -> None:
    sample = generate_sample()
    villages = {u.code for u in sample.units if u.kind is UnitKind.VILLAGE}
    assert {d.id for d in sample.devices if d.kind is DeviceKind.SIREN} == {f"siren-{v}" for v in villages}
    assert {d.id for d in sample.devices if d.kind is DeviceKind.BROADCAST_ZONE} == {f"bz-{v}" for v in villages}


def test_other_sizes_keep_the_rules() -> None:
    sample = generate_sample(seed=1, villages=40, grids=41)
    assert Counter(u.kind for u in sample.units)[UnitKind.GRID] == 41
    assert validate(sample) == []


async def test_the_sample_imports_cleanly(db: Database) -> None:
    sample = generate_sample()
    assert validate(sample) == []

    result = await import_directory(db, sample, actor="demo", at=datetime(2026, 6, 1, tzinfo=UTC))

    assert (result.units_created, result.people_created, result.devices_created) == (1333, 1666, 600)
    # 1000 grid workers + 1000 deputies backing grids + 600 village heads and deputies + 64 township + 2 county
    assert result.responsibilities == 2666
    async with db.session() as s:
        count = {
            t.__name__: (await s.execute(select(func.count()).select_from(t))).scalar_one()
            for t in (OrgUnit, Person, Responsibility, Device)
        }
        fenghuang = (
            await s.execute(
                select(col(OrgUnit.kind), func.count())
                .where(col(OrgUnit.path).startswith("/500238/500238101/"))
                .group_by(col(OrgUnit.kind))
            )
        ).all()
    assert count == {"OrgUnit": 1333, "Person": 1666, "Responsibility": 2666, "Device": 600}
    subtree = {str(kind): int(n) for kind, n in fenghuang}
    assert subtree["township"] == 1
    assert subtree["village"] >= 1
    assert subtree["grid"] >= subtree["village"]
