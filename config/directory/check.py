"""Checking a directory against itself and against what the database already holds.

Every check runs to the end and adds to one list, so a file with ten mistakes is fixed in one go.

Who answers for a unit is added to and updated by an import; the unit's whole list is replaced only when
asked (`replace`), and then the check names everyone who would be removed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from alerting.model.domain import UNIT_CHILD_KIND, Role, UnitKind
from alerting.model.privacy import mask_phone
from alerting.store.tables import Device, OrgUnit, Person, Responsibility
from config.directory.model import Directory, PersonRow, ResponsibilityRow, RowError, Source, UnitRow
from config.directory.parse import LABELS, normalise_phone

# column widths of the tables; PostgreSQL enforces them, so say so before it does
_MAX = {"code": 20, "unit_name": 100, "person_id": 64, "person_name": 100, "wecom_userid": 64, "email": 200}


@dataclass(frozen=True)
class StoredUnit:
    kind: UnitKind | None
    parent_code: str | None
    path: str
    name: str = ""


@dataclass(frozen=True)
class StoredDuty:
    """One stored responsibility: who answers for a unit, in which role and rank."""

    person_id: str
    role: str
    rank: int


@dataclass(frozen=True)
class Existing:
    """What the database holds that an import must fit with."""

    units: Mapping[str, StoredUnit] = field(default_factory=dict)
    phones: Mapping[str, str | None] = field(default_factory=dict)  # person id -> phone
    device_ids: frozenset[str] = frozenset()
    duties: Mapping[str, tuple[StoredDuty, ...]] = field(default_factory=dict)  # unit code -> its list
    names: Mapping[str, str] = field(default_factory=dict)  # person id -> name, to say who would be removed


async def read_existing(session: AsyncSession) -> Existing:
    units = {
        row.code: StoredUnit(_kind(row.kind), row.parent_code, row.path, row.name)
        for row in await session.execute(
            select(col(OrgUnit.code), col(OrgUnit.kind), col(OrgUnit.parent_code), col(OrgUnit.path), col(OrgUnit.name))
        )
    }
    phones: dict[str, str | None] = {}
    names: dict[str, str] = {}
    for person in await session.execute(select(col(Person.id), col(Person.phone), col(Person.name))):
        phones[person.id], names[person.id] = person.phone, person.name
    devices = frozenset((await session.execute(select(col(Device.id)))).scalars())
    duties: dict[str, list[StoredDuty]] = defaultdict(list)
    for duty in await session.execute(
        select(
            col(Responsibility.unit_code),
            col(Responsibility.person_id),
            col(Responsibility.role),
            col(Responsibility.rank),
        ).order_by(col(Responsibility.unit_code), col(Responsibility.rank))
    ):
        duties[duty.unit_code].append(StoredDuty(duty.person_id, duty.role, duty.rank))
    return Existing(
        units=units,
        phones=phones,
        device_ids=devices,
        duties={code: tuple(rows) for code, rows in duties.items()},
        names=names,
    )


@dataclass(frozen=True)
class Removal:
    """Someone an import with `replace` takes off a unit's list, named the way the administrator knows them."""

    unit_code: str
    unit_name: str
    person_id: str
    person_name: str
    role: str
    rank: int

    def __str__(self) -> str:
        try:
            role = f"{self.role} {Role(self.role).label}"
        except ValueError:
            role = self.role
        unit = f"{self.unit_name} {self.unit_code}" if self.unit_name else self.unit_code
        return f"{unit}: {self.person_name or self.person_id} ({self.person_id}), {role}, rank 顺位 {self.rank}"


def _kind(value: str) -> UnitKind | None:
    try:
        return UnitKind(value)
    except ValueError:
        return None


@dataclass
class Checked:
    """The outcome of a check: the problems, and for a clean directory the path of every unit and, when
    replacing, everyone the import would take off a unit's list."""

    errors: list[RowError]
    paths: dict[str, str]
    removals: list[Removal] = field(default_factory=list)


def _where(source: Source | None) -> str:
    return str(source) if source is not None else "generated"


def _is_code(code: str) -> bool:
    return code.isascii() and code.isdigit() and len(code) <= _MAX["code"]


class _Check:
    def __init__(self, directory: Directory, existing: Existing, replace: bool) -> None:
        self.d = directory
        self.existing = existing
        self.replace = replace
        self.errors: list[RowError] = list(directory.problems)
        self.units: dict[str, UnitRow] = {}  # first row of each code in the files
        self.kinds: dict[str, UnitKind | None] = {code: u.kind for code, u in existing.units.items()}
        self.parents: dict[str, str | None] = {code: u.parent_code for code, u in existing.units.items()}

    def error(self, source: Source | None, column: str | None, message: str) -> None:
        self.errors.append(RowError(source, LABELS.get(column or "", column), message))

    def known_unit(self, code: str) -> bool:
        return code in self.kinds or code in self.d.unreadable_units

    def run(self) -> Checked:
        self.check_unit_rows()
        self.check_hierarchy()
        self.check_people()
        self.check_responsibilities()
        self.check_devices()
        paths = self.paths() if not self.errors else {}
        return Checked(self.errors, paths, self.removals() if self.replace else [])

    def check_unit_rows(self) -> None:
        for u in self.d.units:
            if not _is_code(u.code):
                self.error(u.source, "code", f"单位代码应为数字 unit code {u.code!r} must be digits (at most 20)")
            if not u.name or len(u.name) > _MAX["unit_name"]:
                self.error(u.source, "name", "名称为空或过长 the name is empty or longer than 100 characters")
            if u.parent_code is not None and not _is_code(u.parent_code):
                self.error(u.source, "parent_code", f"上级代码应为数字 parent code {u.parent_code!r} must be digits")
            first = self.units.get(u.code)
            if first is not None:
                self.error(
                    u.source, "code", f"单位代码重复 duplicate unit code {u.code} (first at {_where(first.source)})"
                )
                continue
            self.units[u.code] = u
            self.kinds[u.code] = u.kind
            self.parents[u.code] = u.parent_code

    def check_hierarchy(self) -> None:
        for u in self.units.values():
            if u.kind is UnitKind.COUNTY:
                if u.parent_code:
                    self.error(
                        u.source, "parent_code", "区县不应有上级 a county is the top unit and has no parent here"
                    )
                continue
            if not u.parent_code:
                self.error(
                    u.source, "parent_code", f"缺少上级代码 a {u.kind.value} ({u.kind.label}) needs a parent unit"
                )
                continue
            if u.parent_code not in self.kinds:
                if u.parent_code not in self.d.unreadable_units:
                    self.error(
                        u.source,
                        "parent_code",
                        f"上级单位不存在 parent unit {u.parent_code} is neither in the files nor in the database",
                    )
                continue
            self.check_level(u.source, u.code, u.kind, u.parent_code, self.kinds[u.parent_code])
        # a unit the files move or re-kind may leave children that only the database knows out of place
        children: dict[str, list[str]] = defaultdict(list)
        for code, stored in self.existing.units.items():
            if code not in self.units and stored.parent_code in self.units:
                children[stored.parent_code].append(code)
        for parent, codes in children.items():
            for code in codes:
                stored = self.existing.units[code]
                if stored.kind is not None:
                    self.check_level(None, code, stored.kind, parent, self.kinds[parent])

    def check_level(
        self, source: Source | None, code: str, kind: UnitKind, parent: str, parent_kind: UnitKind | None
    ) -> None:
        expected = UNIT_CHILD_KIND.get(parent_kind) if parent_kind is not None else None
        if expected is kind:
            return
        under = f"{parent_kind.value} ({parent_kind.label})" if parent_kind else "unit"
        allowed = f"only a {expected.value} ({expected.label})" if expected else "nothing"
        self.error(
            source,
            "kind",
            f"层级不符 {code} is a {kind.value} ({kind.label}) under {parent}, a {under}; {allowed} can be under it",
        )

    def check_people(self) -> None:
        first: dict[str, PersonRow] = {}
        phone_owner: dict[str, PersonRow] = {}
        wecom_owner: dict[str, PersonRow] = {}
        in_files = {p.id for p in self.d.people}
        db_phone_owner = {
            phone: pid for pid, phone in self.existing.phones.items() if phone is not None and pid not in in_files
        }
        for p in self.d.people:
            seen = first.get(p.id)
            if seen is not None:
                if seen.details() != p.details():
                    self.error(
                        p.source,
                        _first_difference(seen, p),
                        f"同一编号信息不一致 person {p.id} is listed with other details at {_where(seen.source)}",
                    )
                continue
            first[p.id] = p
            self.check_person_fields(p)
            if p.phone is not None:
                owner = phone_owner.setdefault(p.phone, p)
                if owner is not p:
                    self.error(
                        p.source,
                        "phone",
                        f"手机号重复 phone {mask_phone(p.phone)} is also person {owner.id} "
                        f"at {_where(owner.source)}; one person, one id",
                    )
                elif p.phone in db_phone_owner:
                    self.error(
                        p.source,
                        "phone",
                        f"手机号重复 phone {mask_phone(p.phone)} belongs to person {db_phone_owner[p.phone]} "
                        "in the database; use that id",
                    )
            if p.wecom_userid is not None:
                owner = wecom_owner.setdefault(p.wecom_userid, p)
                if owner is not p:
                    self.error(
                        p.source,
                        "wecom_userid",
                        f"企业微信账号重复 WeCom id {p.wecom_userid} is also person {owner.id} "
                        f"at {_where(owner.source)}",
                    )

    def check_person_fields(self, p: PersonRow) -> None:
        if len(p.id) > _MAX["person_id"]:
            self.error(p.source, "id", "编号过长 the id is longer than 64 characters")
        if not p.name or len(p.name) > _MAX["person_name"]:
            self.error(p.source, "name", "姓名为空或过长 the name is empty or longer than 100 characters")
        if p.phone is not None and normalise_phone(p.phone) != p.phone:
            self.error(p.source, "phone", f"手机号无效 {p.phone!r} is not a valid number in E.164 form")
        if p.wecom_userid is not None and (len(p.wecom_userid) > _MAX["wecom_userid"] or " " in p.wecom_userid):
            self.error(p.source, "wecom_userid", "企业微信账号无效 the WeCom id has spaces or is too long")
        if p.email is not None and (p.email.count("@") != 1 or " " in p.email or len(p.email) > _MAX["email"]):
            self.error(p.source, "email", f"邮箱无效 {p.email!r} is not an email address")
        if p.phone is None and p.wecom_userid is None and p.email is None:
            self.error(p.source, "phone", "没有联系方式 no phone, WeCom id or email: nobody could reach this person")

    def check_responsibilities(self) -> None:
        people = {p.id for p in self.d.people} | set(self.existing.phones)
        by_rank: dict[tuple[str, int], ResponsibilityRow] = {}
        by_person: dict[tuple[str, str], ResponsibilityRow] = {}
        for r in self.d.responsibilities:
            if not self.known_unit(r.unit_code):
                self.error(
                    r.source, "unit_code", f"单位不存在 unknown unit {r.unit_code!r}: not in the files or the database"
                )
            if r.person_id not in people:
                self.error(r.source, "id", f"人员不存在 unknown person {r.person_id!r}")
            if r.rank < 0:
                self.error(r.source, "rank", "顺位不能为负 rank must be 0 (primary) or more (backups)")
            twin = by_person.setdefault((r.unit_code, r.person_id), r)
            if twin is not r:
                self.error(
                    r.source,
                    "unit_code",
                    f"重复职责 {r.person_id} is already listed for unit {r.unit_code} at {_where(twin.source)}",
                )
                continue
            holder = by_rank.setdefault((r.unit_code, r.rank), r)
            if holder is not r:
                self.error(
                    r.source,
                    "rank",
                    f"顺位重复 unit {r.unit_code} already has rank {r.rank}: {holder.person_id} "
                    f"at {_where(holder.source)}",
                )
        if not self.replace:
            self.check_kept_ranks(by_person)

    def check_kept_ranks(self, in_files: Mapping[tuple[str, str], ResponsibilityRow]) -> None:
        """Added to a unit's stored list, a row must not take a rank someone the files leave in place holds:
        two primaries would be called as one. Replacing the list is the way to hand a rank to someone new."""
        for (unit_code, person_id), r in in_files.items():
            for kept in self.existing.duties.get(unit_code, ()):
                if kept.rank == r.rank and kept.person_id != person_id and (unit_code, kept.person_id) not in in_files:
                    name = self.existing.names.get(kept.person_id, kept.person_id)
                    self.error(
                        r.source,
                        "rank",
                        f"顺位已被占用 unit {unit_code} already has rank {r.rank}: {name} ({kept.person_id}) in the "
                        "database, who stays (an import adds and updates only); give another rank, or replace the "
                        "unit's whole list (--replace / 替换), which removes whoever the files do not list",
                    )

    def removals(self) -> list[Removal]:
        """Stored responsibilities of the units the files list people for that the files do not list again."""
        listed = {(r.unit_code, r.person_id) for r in self.d.responsibilities}
        gone: list[Removal] = []
        for unit_code in sorted({r.unit_code for r in self.d.responsibilities}):
            unit = self.existing.units.get(unit_code)
            named = self.units.get(unit_code)
            unit_name = named.name if named is not None else (unit.name if unit is not None else "")
            for kept in self.existing.duties.get(unit_code, ()):
                if (unit_code, kept.person_id) not in listed:
                    person = self.existing.names.get(kept.person_id, "")
                    gone.append(Removal(unit_code, unit_name, kept.person_id, person, kept.role, kept.rank))
        return gone

    def check_devices(self) -> None:
        seen: dict[str, Source | None] = {}
        for dev in self.d.devices:
            if not dev.id or len(dev.id) > _MAX["person_id"]:
                self.error(dev.source, "id", "设备编号为空或过长 the device id is empty or longer than 64 characters")
            elif dev.id in seen:
                self.error(
                    dev.source, "id", f"设备编号重复 duplicate device id {dev.id} (first at {_where(seen[dev.id])})"
                )
            else:
                seen[dev.id] = dev.source
            if not dev.name or len(dev.name) > _MAX["unit_name"]:
                self.error(dev.source, "name", "名称为空或过长 the name is empty or longer than 100 characters")
            if not self.known_unit(dev.unit_code):
                self.error(
                    dev.source,
                    "unit_code",
                    f"单位不存在 unknown unit {dev.unit_code!r}: not in the files or the database",
                )

    def paths(self) -> dict[str, str]:
        """'/500238/500238101/': every ancestor's code, so a subtree is one prefix match."""
        paths: dict[str, str] = {}
        for start in self.kinds:
            chain: list[str] = []
            code: str | None = start
            while code is not None and code not in paths and len(chain) <= len(UnitKind):
                chain.append(code)
                code = self.parents.get(code)
            prefix = paths[code] if code is not None and code in paths else "/"
            for c in reversed(chain):
                prefix = paths[c] = f"{prefix}{c}/"
        return paths


def _first_difference(a: PersonRow, b: PersonRow) -> str:
    for column, x, y in zip(("name", "phone", "wecom_userid", "email"), a.details(), b.details(), strict=True):
        if x != y:
            return column
    return "id"


def check(directory: Directory, existing: Existing | None = None, *, replace: bool = False) -> Checked:
    """`replace`: the units the people rows name get exactly the files' lists (see `Checked.removals`);
    without it, the files' rows are added to the stored lists or update them."""
    return _Check(directory, existing or Existing(), replace).run()


def validate(directory: Directory, existing: Existing | None = None, *, replace: bool = False) -> list[RowError]:
    """Every problem with the directory, alone or on top of what the database holds; empty when it can be imported."""
    return check(directory, existing, replace=replace).errors
