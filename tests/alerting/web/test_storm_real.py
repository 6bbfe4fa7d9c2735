"""A small storm on a real `jiaoying serve`: ten live boards open, twenty answers a second through the links the
grid workers got by SMS, and escalation deadlines falling due in the middle of it.

What the duty room relies on: every open board shows each answer within two seconds, and an escalation step
fires when it is due, not when the web has a moment. Times: when an answer's request returned (here), when the
server read the board each stream then sent (the snapshot's generated_at), and in the store (each deadline's
due_at beside its fired_at).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.alerting.deliver.paced import (
    BURST_UNITS,
    JIAOYING,
    PacedCounty,
    engine_env,
    make_sample,
    paced_county,
)
from tests.browser.served import LINK
from tests.fakes.twilio import Paced

pytestmark = pytest.mark.alone  # it measures the server's lateness, not a second worker's load

STREAMS = 10
ANSWERS_PER_S = 20
RUN_S = 15
WAIT_S = 10  # the first step's answer window: the second step falls due in the middle of the run
SHOWN_WITHIN_S = 2.0
FIRED_WITHIN_S = 2.0
PASSWORD = "storm-pass-0001"
KEEP_ALIVE = httpx.Timeout(10.0, read=60.0)  # a quiet stream still sends a comment every few seconds

STEPS = f"""\
    person_steps:
      - {{who: target, channels: [sms], wait_s: {WAIT_S}}}
      - {{who: target, channels: [voice], wait_s: 900}}
"""
POLICY = "levels:\n" + "".join(f"  {level}:\n{STEPS}" for level in ("red", "orange", "yellow", "blue"))

PROVIDER = Paced(messages_per_second=100, calls_per_second=100, latency_s=0.05, callbacks=("in_order",))


@pytest.fixture(scope="module")
def sample_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 巫溪 sample with a duty officer's account; each test works on a copy."""
    directory = tmp_path_factory.mktemp("storm-sample")
    db = make_sample(directory)
    added = subprocess.run(
        [*JIAOYING, "account", "add", "duty", "--role", "duty", "--name", "王值班", "--password-stdin"],
        env=engine_env(directory, db),
        cwd=directory,
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert added.returncode == 0, added.stderr[-2000:]
    return db


async def session_cookie(county: PacedCounty) -> str:
    async with httpx.AsyncClient(base_url=county.url, trust_env=False) as client:
        r = await client.post("/console/sign-in", data={"username": "duty", "password": PASSWORD})
        assert r.status_code == 303, r.text[:500]
        return r.cookies["jy_session"]


async def watch_board(url: str, cookie: str, seen: list[tuple[float, int]]) -> None:
    """One live board: (when the server read it, answers shown) for every snapshot the stream sends. The server's
    time (the snapshot's generated_at, wall clock on this machine), not the arrival here: this process also runs
    the paced provider and its callbacks, and on two cores it read ten streams seconds late while the server had
    read and sent each board in time (py-spy on both processes)."""
    headers = {"accept": "text/event-stream"}
    async with (
        httpx.AsyncClient(base_url=url, cookies={"jy_session": cookie}, timeout=KEEP_ALIVE, trust_env=False) as client,
        client.stream("GET", "/console/events", headers=headers) as events,
    ):
        assert events.status_code == 200
        async for line in events.aiter_lines():  # until the test cancels it
            if line.startswith("data:"):
                board = json.loads(line[5:])
                read_at = datetime.fromisoformat(board["generated_at"]).timestamp()
                seen.append((read_at, sum(a["totals"]["answered"] for a in board["alerts"])))


async def answer_by_link(client: httpx.AsyncClient, link: str) -> float:
    path = link[link.index("/ack/") :]
    r = await client.post(path, data={})
    assert r.status_code == 200, r.text[:500]
    return time.time()  # wall clock, as the boards' generated_at


async def test_ten_boards_see_every_answer_and_deadlines_fire_on_time(tmp_path: Path, sample_db: Path) -> None:
    async with paced_county(
        tmp_path, sample_db, PROVIDER, sms_per_second=100, calls_per_second=100, policy=POLICY
    ) as county:
        cookie = await session_cookie(county)
        boards: list[list[tuple[float, int]]] = [[] for _ in range(STREAMS)]
        watchers = [asyncio.create_task(watch_board(county.url, cookie, seen)) for seen in boards]
        await county.wait_for(lambda: all(boards), 20, "every board's first snapshot")

        issued = await county.issue("yellow", "五乡镇强降雨黄色预警（风暴）", BURST_UNITS)
        answered: list[float] = []
        used: set[str] = set()
        async with httpx.AsyncClient(base_url=county.url, timeout=30, trust_env=False) as phones:
            started = time.monotonic()
            pending: set[asyncio.Task[float]] = set()
            for n in range(ANSWERS_PER_S * RUN_S):
                await asyncio.sleep(max(0.0, started + n / ANSWERS_PER_S - time.monotonic()))
                links = [m.group(0) for sms in county.twilio.received if (m := LINK.search(sms.text or ""))]
                fresh = next((link for link in links if link not in used), None)
                if fresh is None:
                    continue  # the burst has not reached anyone new yet
                used.add(fresh)
                pending.add(asyncio.create_task(answer_by_link(phones, fresh)))
            answered = sorted(await asyncio.gather(*pending))
        await asyncio.sleep(SHOWN_WITHIN_S + 1)
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        deadlines = fired_deadlines(county.db, issued.id)

    assert len(answered) >= ANSWERS_PER_S * RUN_S // 2, f"only {len(answered)} answers given: nothing was tested"
    late_boards, slowest = [], 0.0
    for i, seen in enumerate(boards):
        for k, at in enumerate(answered, start=1):  # by `at`, k answers had returned
            shown = next((t for t, count in seen if count >= k), None)
            if shown is None or shown - at > SHOWN_WITHIN_S:
                late_boards.append(f"board {i} showed answer {k} {'never' if shown is None else f'{shown - at:.1f} s'}")
                break
            slowest = max(slowest, shown - at)
    print(f"{STREAMS} boards: each answer shown within {slowest:.2f} s on every board that kept up")
    assert not late_boards, "; ".join(late_boards)
    assert deadlines, "no escalation step fell due during the run: nothing was tested"
    late = [(due, fired) for due, fired in deadlines if (fired - due).total_seconds() > FIRED_WITHIN_S]
    worst = max((fired - due).total_seconds() for due, fired in deadlines)
    print(f"{len(answered)} answers; {len(deadlines)} deadlines fired, the latest {worst:.2f} s after due")
    assert not late, f"{len(late)} of {len(deadlines)} deadlines fired over {FIRED_WITHIN_S} s late (worst {worst:.1f})"


def fired_deadlines(db: Path, alert_id: int) -> list[tuple[datetime, datetime]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT due_at, fired_at FROM deadline WHERE alert_id = ? AND fired_at IS NOT NULL", (alert_id,)
        ).fetchall()
    return [(datetime.fromisoformat(due), datetime.fromisoformat(fired)) for due, fired in rows]
