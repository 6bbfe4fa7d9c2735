"""Target resolution and planning on the 巫溪 sample: who a township alert reaches, per level."""

from __future__ import annotations

from collections import Counter

from alerting.issue.alerts import AlertRequest, AlertService
from alerting.model.clock import ManualClock
from alerting.model.domain import Level, Role
from alerting.store.db import Database
from config.demo.sample import generate_sample
from config.directory import import_directory
from escalation.policy.rules import default_policy

FENGHUANG = "500238101"


async def test_a_township_alert_reaches_every_primary_person_and_device_below_it(
    db: Database, clock: ManualClock
) -> None:
    sample = generate_sample(seed=3)
    await import_directory(db, sample, actor="test", at=clock.now())
    alerts = AlertService(db, clock, default_policy())

    issued = await alerts.trigger(
        AlertRequest(level=Level.RED, hazard="暴雨", title="凤凰镇暴雨红色预警", text="强降雨。", units=[FENGHUANG]),
        actor="duty:test",
    )

    under = {u.code for u in sample.units if u.code.startswith(FENGHUANG)}
    primaries = {r.person_id for r in sample.responsibilities if r.unit_code in under and r.rank == 0}
    devices = [d for d in sample.devices if d.unit_code in under]
    assert issued.targets == len(primaries) + len(devices)
    roles = Counter(r.role for r in sample.responsibilities if r.unit_code in under and r.rank == 0)
    assert roles[Role.TOWNSHIP_DUTY] == 1 and roles[Role.VILLAGE_HEAD] >= 1 and roles[Role.GRID_WORKER] >= 1
    people = {p.id: p for p in sample.people}
    with_wecom = sum(1 for pid in primaries if people[pid].wecom_userid)
    assert issued.by_channel == {
        "voice": len(primaries),
        "sms": len(primaries),
        "wecom": with_wecom,
        "device": sum(1 for d in devices if d.kind == "siren"),
        "broadcast": sum(1 for d in devices if d.kind == "broadcast_zone"),
    }


async def test_each_level_plans_its_own_first_wave(db: Database, clock: ManualClock) -> None:
    sample = generate_sample(seed=3, villages=40, grids=80)
    await import_directory(db, sample, actor="test", at=clock.now())
    alerts = AlertService(db, clock, default_policy())
    waves = {}
    for level, hazard in [
        (Level.RED, "暴雨"),
        (Level.ORANGE, "暴雨"),
        (Level.ORANGE, "山洪"),
        (Level.YELLOW, "高温"),
        (Level.BLUE, "森林火险"),
    ]:
        issued = await alerts.trigger(
            AlertRequest(level=level, hazard=hazard, title="t", text="t", units=[FENGHUANG]), actor="duty:test"
        )
        waves[(level, hazard)] = set(issued.by_channel)
    assert waves[(Level.RED, "暴雨")] == {"voice", "sms", "wecom", "device", "broadcast"}
    assert waves[(Level.ORANGE, "暴雨")] == {"voice", "sms", "wecom"}
    assert waves[(Level.ORANGE, "山洪")] == {"voice", "sms", "wecom", "device"}  # sirens when the hazard says so
    assert waves[(Level.YELLOW, "高温")] == {"sms", "wecom"}
    assert waves[(Level.BLUE, "森林火险")] == {"wecom", "sms"}  # SMS only for those without WeCom
