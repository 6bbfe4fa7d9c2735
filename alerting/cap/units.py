"""A message's administrative division codes to the directory's units: the most specific ones given.

Codes are read as GB/T 2260 (6 digits: county 500238; 500200 and 500000 name the city and province above it) or
as statistical codes (12 digits: 500238000000 is the county, 500238101000 the township 500238101, 500238101001 a
village); this directory's own 9-digit township and 14-digit grid codes are taken as they are.
- a code of a unit in the directory names that unit;
- a code of an area containing the whole county (the province, the city) names the county;
- a code inside the county that no unit has is refused, naming it: a typo must not quietly leave people out;
- a code of an area elsewhere is left aside and listed (a provincial message may name several counties).
Of the units named, one inside another is dropped: a county code beside township codes names the issuer's
area, not the whole county.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting.cap.errors import CapRefused
from alerting.cap.message import Pair
from alerting.store.tables import OrgUnit


@dataclass(frozen=True)
class Resolved:
    units: list[str]  # codes, most specific only, in the order the message named them
    names: list[str]
    elsewhere: list[str]  # codes of areas outside this county, left aside


def directory_code(value: str) -> str:
    """The code as the directory writes it: statistical 12-digit codes lose their zero tail."""
    if len(value) == 12:
        if value.endswith("000000"):
            return value[:6]
        if value.endswith("000"):
            return value[:9]
    return value


def _significant(code: str) -> str:
    """The part of a code that names its area: 500000 → 50, 500200 → 5002, 500238 → 500238."""
    if len(code) == 6:
        if code.endswith("0000"):
            return code[:2]
        if code.endswith("00"):
            return code[:4]
    return code


async def resolve(s: AsyncSession, pairs: list[Pair]) -> Resolved:
    codes = [directory_code(p.value.strip()) for p in pairs]
    found = {u.code: u for u in (await s.execute(select(OrgUnit).where(col(OrgUnit.code).in_(codes)))).scalars()}
    roots = list((await s.execute(select(OrgUnit).where(col(OrgUnit.parent_code).is_(None)))).scalars())
    chosen: dict[str, OrgUnit] = {}
    elsewhere: list[str] = []
    for pair, code in zip(pairs, codes, strict=True):
        if code in found:
            chosen.setdefault(code, found[code])
            continue
        above = [r for r in roots if r.code.startswith(_significant(code))]
        if above:
            for r in above:
                chosen.setdefault(r.code, r)
        elif any(code.startswith(r.code) for r in roots):
            raise CapRefused(pair.path, f"no unit of this county has the code {pair.value} (as {code})")
        else:
            elsewhere.append(pair.value)
    if not chosen:
        raise CapRefused(
            pairs[0].path,
            f"none of the areas lies in this county ({', '.join(p.value for p in pairs)}); nobody here is warned",
        )
    paths = [u.path for u in chosen.values()]
    specific = [u for u in chosen.values() if not any(p != u.path and p.startswith(u.path) for p in paths)]
    return Resolved([u.code for u in specific], [u.name for u in specific], elsewhere)
