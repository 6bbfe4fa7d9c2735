"""The duty room's CAP story over HTTP: the weather service's red rainstorm warning comes in, is issued once,
is lowered to orange by its Update and lifted by its Cancel; every alert goes back out as valid CAP 1.2 and the
public feed shows what is active and real, never a drill."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlmodel import col

from alerting.cap.message import read_message
from alerting.cap.safe import read_xml
from alerting.cap.schema import is_valid
from alerting.store.tables import Alert, AuditEvent, CapMessage
from config.wiring import AssembledEngine
from tests.alerting.board_setup import AUDITOR, DUTY, TOWNSHIP

CORPUS = Path(__file__).parent / "corpus"
CAP = {"Content-Type": "application/cap+xml"}


def corpus(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


async def post(api: httpx.AsyncClient, data: bytes, key: dict[str, str] = DUTY, **params: str) -> httpx.Response:
    return await api.post("/api/v1/cap", content=data, headers={**key, **CAP}, params=params)


async def exported(api: httpx.AsyncClient, alert_id: int) -> str:
    """The alert as CAP, asserted valid against the shipped OASIS schema."""
    r = await api.get(f"/api/v1/alerts/{alert_id}/cap", headers=AUDITOR)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/cap+xml")
    root = read_xml(r.content)
    assert is_valid(root), r.text
    return r.text


@pytest.mark.both_databases
async def test_alert_update_cancel_chain(api: httpx.AsyncClient, engine: AssembledEngine) -> None:
    red = corpus("valid/rainstorm_red.xml")
    r = await post(api, red)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["outcome"] == "issued" and not body["duplicate"]
    first = body["alert"]
    # the county code beside the township's names the issuer's area: only 凤凰镇 is warned
    assert first["target_units"] == ["500238101"]
    assert (first["level"], first["hazard"], first["exercise"]) == ("red", "暴雨", False)
    assert first["title"] == "巫溪县气象台发布凤凰镇暴雨红色预警"
    assert first["instructions"] == "立即转移沿河、低洼地带和地质灾害隐患点群众。"

    again = await post(api, red)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert again.json()["alert"]["id"] == first["id"]
    changed = await post(api, red.replace("立即转移".encode(), "尽快转移".encode()))
    assert changed.status_code == 409
    assert changed.headers["content-type"] == "application/problem+json"
    assert changed.json()["element"] == "identifier"

    async with engine.db.session() as s:
        alerts = list((await s.execute(select(Alert))).scalars())
        kept = (await s.execute(select(CapMessage))).scalars().one()
        taken = (await s.execute(select(AuditEvent).where(col(AuditEvent.kind) == "cap.taken"))).scalars().one()
    assert len(alerts) == 1
    assert kept.body == red and kept.alert_id == first["id"]  # verbatim, linked to its alert
    assert taken.data["sha256"] == hashlib.sha256(red).hexdigest() and taken.alert_id == first["id"]

    first_cap = await exported(api, first["id"])
    assert "<msgType>Alert</msgType>" in first_cap and "<value>red</value>" in first_cap

    r = await post(api, corpus("valid/rainstorm_update.xml"))
    assert r.status_code == 201, r.text
    second = r.json()["alert"]
    assert r.json()["outcome"] == "updated"
    assert (second["level"], second["supersedes_id"]) == ("orange", first["id"])
    second_cap = await exported(api, second["id"])
    assert "<msgType>Update</msgType>" in second_cap
    assert f"jiaoying,jiaoying.alert.{first['id']}," in second_cap  # references the alert it replaced

    feed = await api.get("/cap/feed.atom")
    assert feed.status_code == 200 and feed.headers["content-type"].startswith("application/atom+xml")
    assert f"/cap/alerts/{second['id']}<" in feed.text and f"/cap/alerts/{first['id']}<" not in feed.text
    public = await api.get(f"/cap/alerts/{second['id']}")
    assert public.status_code == 200 and is_valid(read_xml(public.content))

    r = await post(api, corpus("valid/rainstorm_cancel.xml"))
    assert r.status_code == 200, r.text
    assert r.json()["outcome"] == "lifted" and r.json()["alert"]["status"] == "cancelled"
    cancel_cap = await exported(api, second["id"])
    message = read_message(read_xml(cancel_cap.encode()))
    assert message.msg_type == "Cancel"
    assert message.references is not None and len(message.references.text.split()) == 2  # the whole chain
    assert "/cap/alerts/" not in (await api.get("/cap/feed.atom")).text
    assert (await api.get(f"/cap/alerts/{second['id']}")).status_code == 404


async def test_a_reference_to_nothing_known_is_refused(api: httpx.AsyncClient) -> None:
    r = await post(api, corpus("invalid/update_unknown_reference.xml"))
    assert r.status_code == 422
    problem = r.json()
    assert r.headers["content-type"] == "application/problem+json"
    assert problem["element"] == "references" and "50023841600000_20260101000000_0" in problem["detail"]


async def test_an_exercise_is_a_drill_and_stays_out_of_the_feed(api: httpx.AsyncClient) -> None:
    r = await post(api, corpus("valid/exercise_flash_flood.xml"))
    assert r.status_code == 201, r.text
    alert = r.json()["alert"]
    assert alert["exercise"] is True and alert["target_units"] == ["50023810100201"]
    assert "<status>Exercise</status>" in await exported(api, alert["id"])
    assert "/cap/alerts/" not in (await api.get("/cap/feed.atom")).text
    assert (await api.get(f"/cap/alerts/{alert['id']}")).status_code == 404


async def test_cap11_for_the_whole_province_warns_the_county(api: httpx.AsyncClient) -> None:
    r = await post(api, corpus("valid/cap11_heat.xml"))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["alert"]["target_units"] == ["500238"] and body["alert"]["level"] == "blue"
    assert body["check"]["version"] == "1.1"
    assert body["check"]["left_aside"] == ["420324"]  # 竹溪县 is not ours
    await exported(api, body["alert"]["id"])


async def test_check_only_says_what_would_be_issued(api: httpx.AsyncClient, engine: AssembledEngine) -> None:
    r = await post(api, corpus("valid/village_severity_only.xml"), check="true")
    assert r.status_code == 200, r.text
    said = r.json()
    assert (said["action"], said["level"], said["level_from"], said["hazard"]) == (
        "issue",
        "yellow",
        "severity",
        "地质灾害",
    )
    assert said["units"] == ["500238101001"] and said["unit_names"] == ["东坪村"]
    async with engine.db.session() as s:
        assert (await s.execute(select(Alert))).first() is None


async def test_a_township_key_takes_only_its_own_area(api: httpx.AsyncClient) -> None:
    other = (
        corpus("valid/rainstorm_red.xml")
        .replace(b"500238101000", b"500238102000")
        .replace(b"<value>500238</value>", b"<value>500238102</value>")
    )
    r = await post(api, other, key=TOWNSHIP)
    assert r.status_code == 403 and r.json()["element"] == "info[0]/area[0]/geocode[0]"
    assert (await post(api, corpus("valid/rainstorm_red.xml"), key=TOWNSHIP)).status_code == 201


async def test_refusals_are_problems_naming_the_element(api: httpx.AsyncClient) -> None:
    r = await post(api, corpus("invalid/circle_only.xml"))
    assert r.status_code == 422 and r.json()["element"] == "info[0]/area[0]/circle[0]"
    r = await post(api, corpus("invalid/unknown_township.xml"))
    assert r.status_code == 422 and r.json()["element"] == "info[0]/area[0]/geocode[1]"
    r = await post(api, corpus("invalid/other_county_only.xml"))
    assert r.status_code == 422 and "none of the areas" in r.json()["detail"]
    r = await post(api, corpus("hostile/internal_entity.xml"))
    assert r.status_code == 400 and r.json()["type"].endswith("cap-hostile-xml")
    r = await api.post(
        "/api/v1/cap", content=corpus("valid/rainstorm_red.xml"), headers={**DUTY, "Content-Type": "text/plain"}
    )
    assert r.status_code == 415
    r = await post(api, corpus("valid/rainstorm_red.xml"), key=AUDITOR)
    assert r.status_code == 403


async def test_an_alert_issued_by_hand_exports_as_valid_cap(api: httpx.AsyncClient) -> None:
    from tests.alerting.board_setup import issue

    alert_id = await issue(api, ["500238101", "500238102"], exercise=False)
    text = await exported(api, alert_id)
    assert "<value>500238101000</value>" in text and "<value>500238102000</value>" in text
    assert "凤凰镇、宁厂镇" in text


@pytest.mark.both_databases
async def test_the_same_message_sent_twice_at_once_is_taken_once(
    api: httpx.AsyncClient, engine: AssembledEngine
) -> None:
    red = corpus("valid/rainstorm_red.xml")
    answers = await asyncio.gather(post(api, red), post(api, red), post(api, red))
    assert sorted(r.status_code for r in answers) == [200, 200, 201], [r.text for r in answers]
    assert len({r.json()["alert"]["id"] for r in answers if r.json()["alert"]}) == 1
    async with engine.db.session() as s:
        assert len(list((await s.execute(select(Alert))).scalars())) == 1
        assert len(list((await s.execute(select(CapMessage))).scalars())) == 1


async def test_a_headline_over_several_lines_is_taken_as_one_line(api: httpx.AsyncClient) -> None:
    folded = corpus("valid/rainstorm_red.xml").replace(
        "巫溪县气象台发布凤凰镇暴雨红色预警".encode(), "巫溪县气象台发布\n      凤凰镇暴雨红色预警".encode()
    )
    r = await post(api, folded)
    assert r.status_code == 201, r.text
    assert r.json()["alert"]["title"] == "巫溪县气象台发布 凤凰镇暴雨红色预警"


async def test_a_township_cannot_cancel_what_the_county_issued_elsewhere(api: httpx.AsyncClient) -> None:
    elsewhere = (
        corpus("valid/rainstorm_red.xml")
        .replace(b"500238101000", b"500238102000")
        .replace(b"<value>500238</value>", b"<value>500238102</value>")
    )
    assert (await post(api, elsewhere)).status_code == 201  # the county's key: 宁厂镇
    cancel = corpus("valid/rainstorm_cancel.xml").replace(
        b" wuxi.qxt@cq.cma,50023841600000_20260704103000_0,2026-07-04T10:30:00+08:00", b""
    )  # it names only the message the county took
    r = await post(api, cancel, key=TOWNSHIP)  # 凤凰镇's key
    assert r.status_code == 403, r.text
    assert r.json()["element"] == "references"


async def test_a_document_nested_far_deeper_than_cap_is_refused_as_hostile(api: httpx.AsyncClient) -> None:
    deep = b'<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">' + b"<a>" * 5000 + b"</a>" * 5000 + b"</alert>"
    r = await post(api, deep)
    assert r.status_code == 400 and r.json()["type"].endswith("cap-hostile-xml")
    assert "deep" in r.json()["detail"]


async def test_a_cap11_cancel_whose_reference_time_says_z_lifts_the_alert(api: httpx.AsyncClient) -> None:
    heat = corpus("valid/cap11_heat.xml")
    issued = await post(api, heat)
    assert issued.status_code == 201, issued.text
    cancel = (
        heat.replace(b"<identifier>heat-2026-0801</identifier>", b"<identifier>heat-2026-0801-c</identifier>")
        .replace(b"<sent>2026-08-01T02:00:00Z</sent>", b"<sent>2026-08-01T09:00:00Z</sent>")
        .replace(b"<msgType>Alert</msgType>", b"<msgType>Cancel</msgType>")
        .replace(
            b"<scope>Public</scope>",
            b"<scope>Public</scope><references>cq.qxt@cma,heat-2026-0801,2026-08-01T02:00:00Z</references>",
        )
    )
    r = await post(api, cancel)  # CAP 1.1 wrote the reference's time with Z, as its sent
    assert r.status_code in (200, 201), r.text
    assert r.json()["outcome"] == "lifted"
