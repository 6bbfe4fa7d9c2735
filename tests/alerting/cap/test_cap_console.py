"""The duty officer uploads the weather service's CAP file in the console, reads the preview, ticks the red
confirmation and takes it; the same file again issues nothing."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from sqlalchemy import func, select

from alerting.model.access import AccountRole
from alerting.store.tables import Alert
from config.wiring import AssembledEngine
from tests.alerting.board_setup import signed_in

RED = (Path(__file__).parent / "corpus" / "valid" / "rainstorm_red.xml").read_bytes()


async def alerts(engine: AssembledEngine) -> int:
    async with engine.db.session() as s:
        return int(await s.scalar(select(func.count()).select_from(Alert)) or 0)


async def test_upload_preview_confirm_red_then_taken_once(api: httpx.AsyncClient, engine: AssembledEngine) -> None:
    csrf = await signed_in(engine.core, api, "duty1", AccountRole.DUTY)
    page = await api.get("/console/cap")
    assert page.status_code == 200 and 'href="/console/cap"' in page.text  # in the menu of whoever may issue
    files = {"file": ("暴雨红色预警.xml", RED, "application/cap+xml")}
    shown = await api.post("/console/cap/check", data={"csrf": csrf}, files=files)
    assert shown.status_code == 200, shown.text
    assert "发布预警" in shown.text and "凤凰镇（500238101）" in shown.text
    assert "我已核实，确认发布红色预警" in shown.text  # the same red confirmation as issuing by hand
    message = re.search(r'name="message" value="([^"]+)"', shown.text)
    assert message is not None
    unconfirmed = await api.post("/console/cap", data={"csrf": csrf, "message": message.group(1)})
    assert unconfirmed.status_code == 422 and "请勾选" in unconfirmed.text
    assert await alerts(engine) == 0
    form = {"csrf": csrf, "message": message.group(1), "confirm_red": "1"}
    taken = await api.post("/console/cap", data=form, follow_redirects=False)
    assert taken.status_code == 303 and taken.headers["location"] == "/console/alerts/1"
    again = await api.post("/console/cap", data=form, follow_redirects=False)
    assert again.status_code == 303 and await alerts(engine) == 1


async def test_a_refused_upload_names_the_element(api: httpx.AsyncClient, engine: AssembledEngine) -> None:
    csrf = await signed_in(engine.core, api, "duty1", AccountRole.DUTY)
    bad = RED.replace(b"<severity>Severe</severity>", b"<severity>\xe4\xb8\xa5\xe9\x87\x8d</severity>")
    shown = await api.post("/console/cap/check", data={"csrf": csrf}, files={"file": ("x.xml", bad, "text/xml")})
    assert shown.status_code == 422 and "info[0]/severity" in shown.text
