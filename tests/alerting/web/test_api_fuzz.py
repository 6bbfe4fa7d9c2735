"""A bounded property-based run over the whole HTTP API (issue 14): schemathesis reads the app's own /openapi.json
and generates requests for every operation, valid ones and broken ones, sent in-process through the ASGI
transport with the duty, auditor, township and admin keys. However strange the request, the answer is never a
5xx, and nothing is left half-written: every alert has its targets and its audit entries, every account its
creation in the audit, and the audit chain verifies.

The budget is fixed (EXAMPLES per operation and mode) and the examples are derandomized, so CI sees the same
requests every run and the run stays within a few minutes on one core.
"""

from __future__ import annotations

import asyncio
import dataclasses
import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import schemathesis
import structlog
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode
from sqlalchemy import func, select
from sqlmodel import col

from alerting.audit import chain as audit
from alerting.issue.alerts import AlertRequest
from alerting.model.access import AccountRole
from alerting.model.clock import ManualClock
from alerting.model.domain import AlertStatus, ChannelKind, Level
from alerting.store.db import Database
from alerting.store.tables import Account, Alert, AuditEvent, Delivery, OrgUnit, Target
from alerting.web.app import create_app
from channels.sandbox import SandboxChannel
from config.settings import Settings
from config.wiring import build_engine
from tests.alerting.board_setup import AUDITOR, DUTY, FENGHUANG, KEYS, NINGCHANG, TOWNSHIP, add_ningchang
from tests.conftest import SmallCounty

log = structlog.get_logger()

EXAMPLES = 20  # per operation and generation mode: 37 operations x 2 modes x 20 is about 1,400 requests
ADMIN = {"X-API-Key": "k-admin-0005"}
CALLERS = (DUTY, AUDITOR, TOWNSHIP, ADMIN)
BASE = "http://jy.test"
WORDS = {"hazard", "title", "text", "instructions", "reason", "display_name"}
PRINTABLE = st.text(st.characters(categories=["L", "N", "P", "Zs"]), min_size=1, max_size=40).filter(str.strip)


@dataclasses.dataclass
class Run:
    """What the generated requests met: statuses per operation, and every 5xx with a way to send it again."""

    statuses: Counter[tuple[str, int]] = dataclasses.field(default_factory=Counter)
    server_errors: list[str] = dataclasses.field(default_factory=list)
    unsendable: int = 0  # requests httpx itself refuses to encode (never reached the app)
    nothing_to_break: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Known:
    """Real values to aim some requests at, so they reach past 404s into the writes."""

    alert_ids: list[int]
    target_ids: list[str]
    units: list[str]
    usernames: list[str]


def _as_httpx(kwargs: dict[str, Any], caller: dict[str, str]) -> dict[str, Any]:
    """schemathesis serialises for `requests`; the same request for httpx, authenticated as `caller`."""
    headers = {
        k: v for k, v in (kwargs.get("headers") or {}).items() if k.lower() not in ("authorization", "x-api-key")
    }
    out: dict[str, Any] = {
        "method": kwargs["method"],
        "url": kwargs["url"],
        "params": kwargs.get("params") or None,
        "cookies": kwargs.get("cookies") or None,
    }
    files = kwargs.get("files")
    data = kwargs.get("data")
    if files:
        headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}  # httpx sets the boundary
        out["files"] = [
            (name, (filename, content if isinstance(content, bytes | str) else str(content)))
            for name, (filename, content) in files
        ]
        if isinstance(data, dict):
            out["data"] = data
    elif kwargs.get("json") is not None:
        out["json"] = kwargs["json"]
    elif isinstance(data, bytes | str):
        out["content"] = data
    elif isinstance(data, dict):
        out["data"] = data
    out["headers"] = headers | caller
    return out


def _aim(case: Any, draw: Callable[[st.SearchStrategy[Any]], Any], known: Known) -> None:
    """Half the time, put real ids and unit codes where the generated ones would only ever miss."""
    if not draw(st.booleans()):
        return
    params = case.path_parameters or {}
    choices: dict[str, list[Any]] = {
        "alert_id": known.alert_ids,
        "target_id": known.target_ids,
        "code": known.units,
        "username": known.usernames,
    }
    for name, values in choices.items():
        if name in params and values:
            params[name] = draw(st.sampled_from(values))
    if isinstance(case.body, dict):
        if "units" in case.body:
            case.body["units"] = draw(st.lists(st.sampled_from(known.units), min_size=1, max_size=3))
        for name in WORDS & case.body.keys():  # generated strings are mostly control characters, refused at once
            case.body[name] = draw(PRINTABLE)


def fuzz(
    schema: Any,
    send: Callable[[dict[str, Any]], httpx.Response],
    known: Known,
    run: Run,
) -> None:
    """Every operation, positive then negative, EXAMPLES each, sent through `send` (runs on a worker thread)."""
    budget = settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # nothing is raised inside, so there is nothing to shrink
        suppress_health_check=list(HealthCheck),
    )
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                budget(_examples(operation.as_strategy(mode), label, send, known, run))()
            except Unsatisfiable:  # nothing to break: no parameters and no body (GET /healthz in negative mode)
                run.nothing_to_break.append(f"{label} ({mode.value})")


def _examples(
    cases: st.SearchStrategy[Any],
    label: str,
    send: Callable[[dict[str, Any]], httpx.Response],
    known: Known,
    run: Run,
) -> Callable[[], None]:
    @given(case=cases, caller=st.sampled_from(CALLERS), data=st.data())
    def one(case: Any, caller: dict[str, str], data: st.DataObject) -> None:
        _aim(case, data.draw, known)
        try:
            request = _as_httpx(case.as_transport_kwargs(base_url=BASE), caller)
            response = send(request)
        except (UnicodeEncodeError, httpx.InvalidURL, TypeError, ValueError):
            run.unsendable += 1  # a header or URL no HTTP client would put on the wire
            return
        run.statuses[(label, response.status_code)] += 1
        if response.status_code >= 500:
            curl = case.as_curl_command(headers=caller)
            run.server_errors.append(f"{label} -> {response.status_code} {response.text[:300]}\n  {curl}")

    return one


async def _count(db: Database, *where: Any, table: Any = AuditEvent) -> int:
    async with db.session() as s:
        return int(await s.scalar(select(func.count()).select_from(table).where(*where)) or 0)


async def half_written(db: Database) -> list[str]:
    """Everything that says a request stopped half-way: each names the row it is about."""
    problems: list[str] = []
    async with db.session() as s:
        alerts = list((await s.execute(select(Alert))).scalars())
        triggered = {
            e.alert_id: e
            for e in (await s.execute(select(AuditEvent).where(col(AuditEvent.kind) == "alert.triggered"))).scalars()
        }
        targets = Counter(
            alert_id for (alert_id,) in (await s.execute(select(col(Target.alert_id)))).all() if alert_id is not None
        )
        kinds = {
            (e.alert_id, e.kind)
            for e in (await s.execute(select(AuditEvent).where(col(AuditEvent.alert_id).is_not(None)))).scalars()
        }
        successors = {a.supersedes_id for a in alerts if a.supersedes_id is not None}
        stray = (
            await s.execute(
                select(col(Delivery.id))
                .outerjoin(Target, col(Target.id) == col(Delivery.target_id))
                .where((col(Target.id).is_(None)) | (col(Target.alert_id) != col(Delivery.alert_id)))
            )
        ).all()
        accounts = [a.username for a in (await s.execute(select(Account))).scalars()]
        created = {
            e.subject
            for e in (await s.execute(select(AuditEvent).where(col(AuditEvent.kind) == "account.created"))).scalars()
        }
    for a in alerts:
        alert_id = a.id
        assert alert_id is not None
        event = triggered.get(alert_id)
        if event is None:
            problems.append(f"alert {alert_id} has no alert.triggered in the audit")
        elif targets[alert_id] != event.data.get("targets"):
            problems.append(
                f"alert {alert_id}: {targets[alert_id]} targets, the audit says {event.data.get('targets')}"
            )
        if targets[alert_id] == 0:
            problems.append(f"alert {alert_id} has no targets")
        if a.status == AlertStatus.CANCELLED.value and (alert_id, "alert.cancelled") not in kinds:
            problems.append(f"alert {alert_id} is cancelled without alert.cancelled in the audit")
        updated = alert_id in successors and (alert_id, "alert.updated") in kinds
        if a.status == AlertStatus.SUPERSEDED.value and not updated:
            problems.append(f"alert {alert_id} is superseded without its successor or alert.updated")
    problems += [f"delivery {d} has no target of its alert" for (d,) in stray]
    problems += [f"account {u} has no account.created in the audit" for u in accounts if f"user:{u}" not in created]
    verified = await audit.verify(db)
    if not verified.ok:
        problems.append(f"the audit chain breaks at row {verified.first_bad_seq}: {verified.reason}")
    return problems


@pytest.mark.timeout(600)
async def test_generated_requests_over_the_whole_api_never_fail_and_never_half_write(
    db: Database, clock: ManualClock, county: SmallCounty
) -> None:
    await add_ningchang(db)
    keys = [f"{key}:{grant}" for key, grant in KEYS.items()] + [f"{ADMIN['X-API-Key']}:admin"]
    engine = build_engine(
        Settings(database_url=db.url, public_url=BASE, secret_key="fuzz-test-secret-0123456789abcdef", api_keys=keys),
        clock=clock,
        channels={k: SandboxChannel(k) for k in ChannelKind},
    )
    core = engine.core
    # two alerts to act on, one reaching 凤凰镇 (the township key's) and one 宁厂镇 (outside it)
    for unit in (FENGHUANG, NINGCHANG):
        await core.alerts.trigger(
            AlertRequest(level=Level.ORANGE, hazard="暴雨", title="暴雨橙色预警", text="强降雨。", units=[unit]),
            actor="cli:duty",
        )
    await core.accounts.create("fuzz-duty", "fuzz-password-0001", role=AccountRole.DUTY, actor="test")
    async with core.db.session() as s:
        known = Known(
            alert_ids=[a for (a,) in (await s.execute(select(col(Alert.id)))).all() if a is not None],
            target_ids=[t for (t,) in (await s.execute(select(col(Target.id)).limit(20))).all()],
            units=[u for (u,) in (await s.execute(select(col(OrgUnit.code)))).all()],
            usernames=["fuzz-duty"],
        )
    loop = asyncio.get_running_loop()
    transport = httpx.ASGITransport(app=create_app(core), raise_app_exceptions=False)  # a crash is its 500
    run = Run()
    try:
        async with httpx.AsyncClient(transport=transport, base_url=BASE, timeout=60) as client:
            document = (await client.get("/openapi.json")).json()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # schemathesis warns about each operation it cannot fill well
                schema = schemathesis.openapi.from_dict(document)

            def send(request: dict[str, Any]) -> httpx.Response:
                # the app and its database live on this test's loop; hypothesis drives them from its thread
                return asyncio.run_coroutine_threadsafe(client.request(**request), loop).result(timeout=120)

            await asyncio.to_thread(fuzz, schema, send, known, run)
        problems = await half_written(core.db)
        alerts = await _count(core.db, table=Alert)
    finally:
        await engine.db.close()
    sent = sum(run.statuses.values())
    by_class = Counter(f"{status // 100}xx" for (_, status), n in run.statuses.items() for _ in range(n))
    log.info("fuzz.done", sent=sent, by_class=dict(by_class), unsendable=run.unsendable, alerts=alerts)
    assert run.server_errors == [], f"{len(run.server_errors)} of {sent} requests answered 5xx:\n" + "\n".join(
        run.server_errors[:20]
    )
    assert problems == []
    # the run reached past authentication and validation into the writes
    assert sent >= 600, run.statuses
    issuing = {status: n for (label, status), n in run.statuses.items() if label == "POST /api/v1/alerts"}
    assert issuing.get(201, 0) > 0, issuing
    assert alerts > len(known.alert_ids)
