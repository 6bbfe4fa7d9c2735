"""Fixtures shared by every test: a migrated database, a clock that moves only when told, a small county."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from alerting.audit import configured
from alerting.audit.keys import Keyring
from alerting.model.clock import ManualClock
from alerting.model.domain import DeviceKind, Role, UnitKind
from alerting.store.db import Database
from alerting.store.tables import Device, OrgUnit, Person, Responsibility
from tests.postgres import PostgresServer, find_bin_dir

pytest_plugins = ["tests.alone"]

BACKENDS = ("sqlite", "postgresql")

# The audit key every test signs with, in the environment so that `jiaoying` commands a test starts sign with it
# too. Tests of keys and rotation install their own for their length (alerting.audit.configured.using).
TEST_AUDIT_KEY = "tests-only-audit-key-not-for-any-county"
os.environ.setdefault("JIAOYING_AUDIT_KEY", TEST_AUDIT_KEY)


@pytest.fixture(autouse=True)
def audit_key() -> Iterator[configured.AuditSetup]:
    """Each test starts from the test key and no checkpoints, whatever the test before it installed."""
    with configured.using(configured.AuditSetup(Keyring.from_secrets(os.environ["JIAOYING_AUDIT_KEY"]))) as setup:
        yield setup


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked `both_databases` run once on SQLite and once on PostgreSQL; the rest on SQLite only.

    JIAOYING_TEST_POSTGRES=all runs every test that takes `db` on both (a slower, occasional sweep).
    """
    everywhere = os.environ.get("JIAOYING_TEST_POSTGRES") == "all"
    if "db" in metafunc.fixturenames and (everywhere or metafunc.definition.get_closest_marker("both_databases")):
        metafunc.parametrize("db", BACKENDS, indirect=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL for the whole run, started the first time a test asks for it."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, postgres) not found; set JIAOYING_PG_BIN")
    server = PostgresServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


async def _migrated(server: PostgresServer) -> str:
    """The migrations run once per session on an empty database; tests get copies (upgrade() then finds
    nothing to do), which is quicker than running them for every test."""
    if server.migrated is None:
        url = await server.create_database()
        database = Database(url)
        await database.upgrade()
        await database.close()
        server.migrated = url.rsplit("/", 1)[1]
    return server.migrated


@pytest.fixture
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated database: a SQLite file, or (for `both_databases` tests) a fresh PostgreSQL database."""
    server: PostgresServer | None = None
    if getattr(request, "param", "sqlite") == "postgresql":
        server = request.getfixturevalue("postgres_server")
        url = await server.create_database(template=await _migrated(server))
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'jiaoying.db'}"
    database = Database(url)
    await database.upgrade()
    yield database
    await database.close()
    if server is not None:
        await server.drop_database(url)  # a run makes hundreds; dropped, the server's directory stays small


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@dataclass(frozen=True)
class SmallCounty:
    """巫溪县 > 凤凰镇 > 两个村 > 网格, with a responsible person (and backups) for every unit."""

    county = "500238"
    township = "500238101"
    villages = ("500238101001", "500238101002")
    grids = ("50023810100101", "50023810100102", "50023810100201")


def _person(pid: str, name: str, n: int, *, wecom: bool = True, email: bool = False) -> dict[str, object]:
    return {
        "id": pid,
        "name": name,
        "phone": f"+86139{n:08d}",
        "wecom_userid": f"wx{n}" if wecom else None,
        "email": f"{pid}@example.org" if email else None,
        "active": True,
    }


async def build_small_county(db: Database) -> SmallCounty:
    c = SmallCounty()
    units: list[dict[str, Any]] = [
        {"code": c.county, "name": "巫溪县", "kind": UnitKind.COUNTY, "parent_code": None, "path": "/500238/"},
        {
            "code": c.township,
            "name": "凤凰镇",
            "kind": UnitKind.TOWNSHIP,
            "parent_code": c.county,
            "path": "/500238/500238101/",
        },
    ]
    units += [
        {
            "code": v,
            "name": f"{'东西'[i]}坪村",
            "kind": UnitKind.VILLAGE,
            "parent_code": c.township,
            "path": f"/500238/500238101/{v}/",
        }
        for i, v in enumerate(c.villages)
    ]
    units += [
        {
            "code": g,
            "name": f"第{g[-1]}网格",
            "kind": UnitKind.GRID,
            "parent_code": g[:12],
            "path": f"/500238/500238101/{g[:12]}/{g}/",
        }
        for g in c.grids
    ]
    people = [
        _person("county-duty", "县值班室", 1, email=True),
        _person("county-backup", "县值班室备岗", 2, email=True),
        _person("tw-duty", "凤凰镇值班员", 3, email=True),
        _person("tw-backup", "凤凰镇备岗", 4),
        _person("v1-head", "东坪村主任", 5),
        _person("v1-deputy", "东坪村副主任", 6),
        _person("v2-head", "西坪村主任", 7),
        _person("g1", "网格员甲", 8),
        _person("g2", "网格员乙", 9, wecom=False),
        _person("g3", "网格员丙", 10),
    ]
    duties = [
        (c.county, "county-duty", Role.COUNTY_DUTY, 0),
        (c.county, "county-backup", Role.COUNTY_DUTY, 1),
        (c.township, "tw-duty", Role.TOWNSHIP_DUTY, 0),
        (c.township, "tw-backup", Role.TOWNSHIP_DUTY, 1),
        (c.villages[0], "v1-head", Role.VILLAGE_HEAD, 0),
        (c.villages[0], "v1-deputy", Role.VILLAGE_HEAD, 1),
        (c.villages[1], "v2-head", Role.VILLAGE_HEAD, 0),
        (c.grids[0], "g1", Role.GRID_WORKER, 0),
        (c.grids[0], "v1-deputy", Role.GRID_WORKER, 1),
        (c.grids[1], "g2", Role.GRID_WORKER, 0),
        (c.grids[1], "v1-deputy", Role.GRID_WORKER, 1),
        (c.grids[2], "g3", Role.GRID_WORKER, 0),
    ]
    devices: list[dict[str, Any]] = [
        {"id": f"siren-{v}", "unit_code": v, "kind": DeviceKind.SIREN, "name": f"{v} 预警喇叭"} for v in c.villages
    ]
    devices += [
        {"id": f"bz-{v}", "unit_code": v, "kind": DeviceKind.BROADCAST_ZONE, "name": f"{v} 广播"} for v in c.villages
    ]
    async with db.session() as s:
        await s.execute(insert(OrgUnit), units)
        await s.execute(insert(Person), people)
        await s.execute(
            insert(Responsibility),
            [{"unit_code": u, "person_id": p, "role": r.value, "rank": k} for u, p, r, k in duties],
        )
        await s.execute(insert(Device), devices)
    return c


@pytest.fixture
async def county(db: Database) -> SmallCounty:
    return await build_small_county(db)
