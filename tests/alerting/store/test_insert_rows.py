"""Bulk inserts refuse rows that do not all name the same columns, instead of dropping what the first row lacks."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from alerting.store.db import Database, insert_rows
from alerting.store.tables import OrgUnit


def unit(code: str) -> dict[str, object]:
    return {"code": code, "name": f"单位{code}", "kind": "village", "parent_code": None, "path": f"/{code}/"}


async def test_rows_naming_other_columns_are_refused_and_nothing_is_written(db: Database) -> None:
    second = unit("500238101002")
    del second["parent_code"]  # left for the database's default, which a bulk insert would not do
    with pytest.raises(ValueError, match=r"org_unit row 1 .*\['parent_code'\]"):
        async with db.session() as s:
            await insert_rows(s, OrgUnit, [unit("500238101001"), second])
    async with db.session() as s:
        assert await s.scalar(select(func.count()).select_from(OrgUnit)) == 0


async def test_rows_naming_the_same_columns_go_in(db: Database) -> None:
    async with db.session() as s:
        await insert_rows(s, OrgUnit, [unit("500238101001"), unit("500238101002")])
    async with db.session() as s:
        assert await s.scalar(select(func.count()).select_from(OrgUnit)) == 2
