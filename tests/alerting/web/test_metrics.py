"""GET /metrics scraped in the middle of an alert: every number it gives is the one the store holds, and only a
county-wide key may read it."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from sqlmodel import col

from alerting.audit import configured
from alerting.audit.checkpoints import Checkpointer
from alerting.deliver.link import LinkHealth
from alerting.model.actor import Actor
from alerting.model.clock import ManualClock, utc
from alerting.model.domain import DeadlineState, DeliveryState, TargetState
from alerting.store.tables import Acknowledgement, Deadline, Delivery, Target
from config.wiring import AssembledEngine
from tests.alerting.board_setup import AUDITOR, DUTY, FENGHUANG, NINGCHANG, TOWNSHIP, issue

pytestmark = pytest.mark.both_databases


async def scrape(api: httpx.AsyncClient) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Metric name -> labels -> value, as Prometheus would read the page."""
    page = await api.get("/metrics", headers=AUDITOR)
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/plain")
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(page.text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


async def test_the_numbers_during_an_alert_are_the_stores(
    engine: AssembledEngine, api: httpx.AsyncClient, clock: ManualClock
) -> None:
    alert_id = await issue(api, [FENGHUANG, NINGCHANG])
    sent = await engine.dispatcher.drain(max_rounds=1)  # part of the first wave out, the rest still queued
    assert sent > 0
    async with engine.db.session() as s:
        people = list(
            (
                await s.execute(
                    select(col(Target.id)).where(col(Target.alert_id) == alert_id, col(Target.person_id).is_not(None))
                )
            ).scalars()
        )
    for target_id in people[:3]:
        clock.advance(seconds=40)
        await engine.acks.answer_on_behalf(
            alert_id, target_id, by=Actor.officer("duty:test"), reason="电话", at=clock.now()
        )

    got = await scrape(api)

    async with engine.db.session() as s:
        deliveries = Counter(
            (str(c), str(st))
            for c, st in await s.execute(
                select(col(Delivery.channel), col(Delivery.state)).where(col(Delivery.alert_id) == alert_id)
            )
        )
        targets = Counter(
            str(st)
            for st in (await s.execute(select(col(Target.state)).where(col(Target.alert_id) == alert_id))).scalars()
        )
        answers = Counter(
            str(c)
            for c in (
                await s.execute(
                    select(col(Acknowledgement.channel)).where(
                        col(Acknowledgement.alert_id) == alert_id, col(Acknowledgement.counted)
                    )
                )
            ).scalars()
        )
        due = Counter(
            str(c)
            for c in (
                await s.execute(
                    select(col(Delivery.channel)).where(
                        col(Delivery.state) == DeliveryState.PENDING.value,
                        col(Delivery.next_attempt_at) <= clock.now(),
                    )
                )
            ).scalars()
        )
        overdue = await s.scalar(
            select(func.min(col(Deadline.due_at))).where(
                col(Deadline.state) == DeadlineState.PENDING.value, col(Deadline.due_at) <= clock.now()
            )
        )
    shown = {dict(k)["channel"] + "/" + dict(k)["state"]: v for k, v in got["jiaoying_deliveries"].items()}
    assert shown == {f"{c}/{st}": float(n) for (c, st), n in deliveries.items()}
    alert = (("alert", str(alert_id)), ("level", "red"))
    assert got["jiaoying_targets"][alert] == sum(targets.values())
    assert got["jiaoying_open_loops"][alert] == targets[TargetState.OPEN.value] == sum(targets.values()) - 3
    assert {dict(k)["channel"]: v for k, v in got["jiaoying_answers"].items()} == {
        c: float(n) for c, n in answers.items()
    }
    assert sum(answers.values()) == 3
    assert {dict(k)["channel"]: v for k, v in got.get("jiaoying_queue_due", {}).items() if v} == {
        c: float(n) for c, n in due.items()
    }
    assert got["jiaoying_first_send_seconds"][alert] >= 0
    assert got["jiaoying_answer_seconds"][(*alert, ("quantile", "0.5"))] == 80.0  # the answers came at 40, 80, 120 s
    # nobody fires the steps here (no escalation loop), so the first one due is overdue by as long as it waited
    assert overdue is not None
    assert got["jiaoying_deadline_lag_seconds"][()] == (clock.now() - utc(overdue)).total_seconds() > 0


async def test_only_a_county_wide_key_reads_it(api: httpx.AsyncClient) -> None:
    assert (await api.get("/metrics")).status_code == 401
    assert (
        await api.get("/metrics", headers=TOWNSHIP)
    ).status_code == 403  # a township's key: not the county's numbers
    assert (await api.get("/metrics", headers=DUTY)).status_code == 200


async def test_what_only_this_process_knows_is_on_the_same_page(
    engine: AssembledEngine, api: httpx.AsyncClient
) -> None:
    # a serve process with its own broker connection: down after two connections, one junk message refused
    link = LinkHealth()
    link.came_up()
    link.went_down()
    link.came_up()
    link.went_down()
    link.refused("malformed")
    engine.core.links["device"] = link
    engine.core.breakers["sms"].failed("503 from the provider")

    got = await scrape(api)

    device = (("channel", "device"),)
    assert got["jiaoying_link_up"][device] == 0
    assert got["jiaoying_link_connections_total"][device] == 2
    assert got["jiaoying_inbound_rejected_total"][(*device, ("reason", "malformed"))] == 1
    assert got["jiaoying_inbound_rejected_total"][(*device, ("reason", "too_large"))] == 0
    assert got["jiaoying_circuit_breaker"][(("channel", "sms"),)] == 0  # one failure: still closed
    for _ in range(4):
        engine.core.breakers["sms"].failed("503 from the provider")
    assert (await scrape(api))["jiaoying_circuit_breaker"][(("channel", "sms"),)] == 2  # five in a row: open


async def test_checkpoint_age_and_the_dashboard_reads_only_what_is_exported(
    engine: AssembledEngine, api: httpx.AsyncClient, clock: ManualClock, tmp_path: Path
) -> None:
    path = tmp_path / "checkpoints.jsonl"
    with configured.using(replace(configured.current(), checkpoints=path)):
        await issue(api, [FENGHUANG])
        key = configured.current().keyring.signing
        assert key is not None
        assert "jiaoying_audit_checkpoint_age_seconds" not in await scrape(api)  # none written yet: no age
        await Checkpointer(engine.db, clock, path, key).write()
        clock.advance(seconds=90)
        engine.core.links["device"] = LinkHealth()

        page = (await api.get("/metrics", headers=AUDITOR)).text

    families = list(text_string_to_metric_families(page))
    ages = [s.value for f in families for s in f.samples if s.name == "jiaoying_audit_checkpoint_age_seconds"]
    assert ages == [90.0]
    exported = {s.name for f in families for s in f.samples} | {
        f"{f.name}_total" if f.type == "counter" else f.name for f in families
    }
    dashboard = json.loads((Path(__file__).parents[3] / "deploy" / "grafana" / "jiaoying.json").read_text())
    asked = {
        name
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        for name in re.findall(r"\bjiaoying_[a-z_]+", target["expr"])
    }
    assert len(asked) >= 15  # the dashboard shows every part of the loop, not a couple of numbers
    assert asked <= exported, f"the dashboard asks for what /metrics never gives: {sorted(asked - exported)}"
