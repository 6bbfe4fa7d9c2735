"""Finding units to warn: search by name or code, the tree below a unit, and names for codes.

Everything is limited to what the principal may warn: a township officer only ever sees their subtree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting.model.access import Principal
from alerting.model.domain import UnitKind
from alerting.store.tables import OrgUnit

SEARCH_LIMIT = 50


@dataclass(frozen=True)
class UnitHit:
    code: str
    name: str
    kind: str
    parent_code: str | None
    path: str
    trail: str = ""  # the names above it, "巫溪县 › 凤凰镇", so two 新华村 can be told apart

    @property
    def kind_label(self) -> str:
        try:
            return UnitKind(self.kind).label
        except ValueError:
            return self.kind


@dataclass
class TreeNode:
    unit: UnitHit
    children: list[TreeNode] = field(default_factory=list)


def scope_clause(principal: Principal) -> ColumnElement[bool]:
    if principal.unit_path is None:
        return true()
    return col(OrgUnit.path).startswith(principal.unit_path)


def _hit(u: OrgUnit, trail: str = "") -> UnitHit:
    return UnitHit(u.code, u.name, u.kind, u.parent_code, u.path, trail)


async def _names(session: AsyncSession, codes: set[str]) -> dict[str, str]:
    if not codes:
        return {}
    rows = await session.execute(select(col(OrgUnit.code), col(OrgUnit.name)).where(col(OrgUnit.code).in_(codes)))
    return {code: name for code, name in rows}


async def _trails(session: AsyncSession, units: Iterable[OrgUnit]) -> dict[str, str]:
    """code -> the names of its ancestors, read in one query."""
    units = list(units)
    names = await _names(session, {c for u in units for c in u.path.strip("/").split("/")[:-1]})
    return {u.code: " › ".join(names.get(c, c) for c in u.path.strip("/").split("/")[:-1]) for u in units}


async def places(session: AsyncSession, paths: Iterable[str]) -> dict[str, str]:
    """path -> where it is below the county, "凤凰镇 › 东坪村 › 第1网格" (the county itself: its own name)."""
    paths = set(paths)
    names = await _names(session, {c for p in paths for c in p.strip("/").split("/")})
    out = {}
    for path in paths:
        codes = path.strip("/").split("/")
        below = codes[1:] or codes
        out[path] = " › ".join(names.get(c, c) for c in below)
    return out


async def search(
    session: AsyncSession,
    principal: Principal,
    *,
    q: str = "",
    parent: str | None = None,
    limit: int = SEARCH_LIMIT,
    offset: int = 0,
) -> tuple[list[UnitHit], int]:
    """Units whose name contains q or whose code starts with it, top of the hierarchy first; and the total."""
    where: list[ColumnElement[bool]] = [scope_clause(principal)]
    q = q.strip()
    if q:
        where.append(
            or_(col(OrgUnit.name).icontains(q, autoescape=True), col(OrgUnit.code).startswith(q, autoescape=True))
        )
    if parent:
        where.append(col(OrgUnit.parent_code) == parent)
    total = await session.scalar(select(func.count()).select_from(OrgUnit).where(*where))
    rows = list(
        (
            await session.execute(
                select(OrgUnit)
                .where(*where)
                .order_by(func.length(col(OrgUnit.path)), col(OrgUnit.path))
                .limit(limit)
                .offset(offset)
            )
        ).scalars()
    )
    trails = await _trails(session, rows)
    return [_hit(u, trails[u.code]) for u in rows], int(total or 0)


async def lookup(session: AsyncSession, codes: Iterable[str]) -> dict[str, UnitHit]:
    """The units with these codes (unknown codes are simply absent)."""
    wanted = list(dict.fromkeys(codes))
    if not wanted:
        return {}
    rows = list((await session.execute(select(OrgUnit).where(col(OrgUnit.code).in_(wanted)))).scalars())
    trails = await _trails(session, rows)
    return {u.code: _hit(u, trails[u.code]) for u in rows}


async def tree(session: AsyncSession, principal: Principal) -> list[TreeNode]:
    """The principal's top unit (the county, or the officer's own unit) with two levels below it."""
    if principal.unit_path is None:
        roots = list((await session.execute(select(OrgUnit).where(col(OrgUnit.parent_code).is_(None)))).scalars())
    else:
        roots = list((await session.execute(select(OrgUnit).where(col(OrgUnit.path) == principal.unit_path))).scalars())
    out: list[TreeNode] = []
    for root in sorted(roots, key=lambda u: u.path):
        depth = root.path.count("/")
        below = (
            await session.execute(
                select(OrgUnit)
                .where(
                    col(OrgUnit.path).startswith(root.path),
                    col(OrgUnit.path) != root.path,
                    func.length(col(OrgUnit.path)) - func.length(func.replace(col(OrgUnit.path), "/", "")) <= depth + 2,
                )
                .order_by(col(OrgUnit.path))
            )
        ).scalars()
        node = TreeNode(_hit(root))
        by_code = {root.code: node}
        for u in below:  # ordered by path, so a parent always comes before its children
            child = TreeNode(_hit(u))
            by_code[u.code] = child
            parent = by_code.get(u.parent_code or "")
            if parent is not None:
                parent.children.append(child)
        out.append(node)
    return out
