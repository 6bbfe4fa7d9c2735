"""Where SQLite and PostgreSQL differ by default, the product behaves the same on both.

SQLite's LIKE ignores the case of ASCII letters and PostgreSQL's does not; a duty officer typing a device id
or a name in capitals must find the same rows whichever store the county runs.
"""

from __future__ import annotations

import pytest
from sqlalchemy import update
from sqlmodel import col

from alerting.model.access import AccountRole, Principal
from alerting.model.clock import ManualClock
from alerting.people.accounts import AccountError, AccountService
from alerting.store.db import Database
from alerting.store.tables import OrgUnit, Person
from alerting.views.directory import devices_page, people_page, search_units
from tests.conftest import SmallCounty

pytestmark = pytest.mark.both_databases

DUTY = Principal(AccountRole.DUTY, "user:duty", "值班员")


async def test_directory_search_ignores_letter_case(db: Database, county: SmallCounty) -> None:
    async with db.session() as s:
        await s.execute(update(Person).where(col(Person.id) == "g3").values(name="Wang Fang"))
        await s.execute(update(OrgUnit).where(col(OrgUnit.code) == county.villages[1]).values(name="Xiping 西坪村"))

    devices, total = await devices_page(db, DUTY, q="SIREN-", limit=10, offset=0)
    assert total == 2
    assert sorted(d.id for d in devices) == [f"siren-{v}" for v in county.villages]

    people, total = await people_page(db, DUTY, q="wang fang", limit=10, offset=0)
    assert (total, [p.id for p in people]) == (1, ["g3"])

    units, total = await search_units(db, DUTY, "XIPING", limit=10, offset=0)
    assert (total, [u.code for u in units]) == (1, [county.villages[1]])


async def test_a_search_for_a_wildcard_character_finds_only_that_character(db: Database, county: SmallCounty) -> None:
    async with db.session() as s:
        await s.execute(update(Person).where(col(Person.id) == "g1").values(name="网格员_甲"))
    people, total = await people_page(db, DUTY, q="_", limit=10, offset=0)
    assert (total, [p.id for p in people]) == (1, ["g1"])
    assert (await people_page(db, DUTY, q="%", limit=10, offset=0))[1] == 0


async def test_a_name_longer_than_its_column_is_refused_by_name_not_by_the_database(
    db: Database, clock: ManualClock
) -> None:
    accounts = AccountService(db, clock)
    with pytest.raises(AccountError, match=r"^name: at most 100 characters"):
        await accounts.create(
            "long-name", "pass-word-0001", role=AccountRole.DUTY, display_name="长" * 101, actor="cli"
        )
    assert [a.username for a in await accounts.list()] == []
    made = await accounts.create(
        "full-name", "pass-word-0001", role=AccountRole.DUTY, display_name="长" * 100, actor="cli"
    )
    assert made.display_name == "长" * 100
