"""A red warning to all 300 sirens of the 巫溪 sample, and the engine loses power in the middle of it.

The installed `jiaoying serve` sends the commands at 30 a second; once 100 sirens have heard theirs it is killed
(SIGKILL). The sirens go on answering into the void: on mosquitto (its default limits, no persistence) the broker
queues their acks for the engine's session and is then restarted, which loses them; on the embedded broker the
broker dies with the engine. The engine comes back only after the sirens' answer window (20 s) has run out, so
every deadline of the first wave is overdue when it starts. The plan has no resend step: the next step sends the
village head out to 鸣锣吹哨. What the duty room must then see:

- every siren that sounded is recorded answered, and no village head was sent out for one of them;
- the ten broken sirens (they hear, never answer) are the ones whose village heads got the task;
- no siren played the warning twice, and all 300 show online.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from channels.sim.devices import SimulatedSirenFleet
from tests.alerting.deliver.paced import JIAOYING, copy_database, engine_env, make_sample, until_serving
from tests.brokers import MosquittoBroker, free_port, start_mosquitto

pytestmark = pytest.mark.timeout(240)

DUTY_KEY = "restart-duty-key"
ANSWER_WINDOW_S = 20  # the first wave's wait before the village head is sent out
# JIAOYING_DEVICE_RESEND_WINDOW_S: time a siren asked again gets to confirm. The window runs from the reconnect,
# so it has to cover sending the backlog again at 30/s (up to ~350 commands, ~12 s) and two acks (up to 6 s).
RESEND_WINDOW_S = 30
COMMANDS_PER_SECOND = 30  # JIAOYING_MQTT_COMMANDS_PER_SECOND: 300 commands take 10 s, so the kill lands mid-way
KILL_AFTER = 100  # commands heard by the sirens when the engine is killed
BROKEN = 10  # sirens that hear their command and never answer

PEOPLE_ONLY = "    person_steps: [{who: target, channels: [sms], wait_s: 900}]\n"
POLICY = (
    "levels:\n  red:\n"
    + PEOPLE_ONLY
    + "    device_steps:\n"
    + f"      - {{who: target, channels: [device], wait_s: {ANSWER_WINDOW_S}}}\n"
    + "      - {who: village, channels: [manual], task: 鸣锣吹哨, wait_s: 900}\n"
    + "".join(f"  {level}:\n{PEOPLE_ONLY}" for level in ("orange", "yellow", "blue"))
)


@pytest.fixture(scope="session")
def sample_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample(tmp_path_factory.mktemp("restart-sample"))


def sirens_of(db: Path) -> list[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return [r[0] for r in con.execute("SELECT id FROM device WHERE kind = 'siren' ORDER BY id")]


@dataclass
class County:
    """`jiaoying serve` on a copy of the sample, restartable on the same port, database and broker."""

    workdir: Path
    mqtt_url: str | None  # None: the engine's embedded broker on `embedded_port`
    port: int = field(default_factory=free_port)
    embedded_port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = None
    runs: int = 0

    def __post_init__(self) -> None:
        self.api = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.port}", headers={"X-API-Key": DUTY_KEY}, timeout=60.0, trust_env=False
        )
        (self.workdir / "policy.yaml").write_text(POLICY, encoding="utf-8")

    @property
    def db(self) -> Path:
        return self.workdir / "jiaoying.db"

    @property
    def broker_url(self) -> str:
        return self.mqtt_url or f"mqtt://127.0.0.1:{self.embedded_port}"

    def log_tail(self) -> str:
        path = self.workdir / f"serve-{self.runs}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"

    async def start(self) -> None:
        self.runs += 1
        env = engine_env(self.workdir, self.db)
        env.update(
            JIAOYING_POLICY_FILE=str(self.workdir / "policy.yaml"),
            JIAOYING_API_KEYS=f'["{DUTY_KEY}:duty"]',
            JIAOYING_MQTT_EMBEDDED_PORT=str(self.embedded_port),
            JIAOYING_MQTT_COMMANDS_PER_SECOND=str(COMMANDS_PER_SECOND),
            JIAOYING_DEVICE_RESEND_WINDOW_S=str(RESEND_WINDOW_S),
        )
        if self.mqtt_url:
            env["JIAOYING_MQTT_URL"] = self.mqtt_url
        with (self.workdir / f"serve-{self.runs}.log").open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                *JIAOYING, "serve", "--host", "127.0.0.1", "--port", str(self.port),
                env=env, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        await until_serving(self.process, self.api, self.log_tail)

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def get(self, path: str, **params: Any) -> Any:
        response = await self.api.get(path, params=params)
        assert response.status_code == 200, f"GET {path}: {response.status_code} {response.text[:500]}"
        return response.json()

    async def all_of(self, path: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            page = await self.get(path, limit=500, offset=len(items))
            items += page["items"]
            if len(items) >= page["total"] or not page["items"]:
                return items

    def task_targets(self, alert_id: int) -> set[str]:
        """The targets a manual task (鸣锣吹哨) was written for, read from the store."""
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30) as con:
            rows = con.execute("SELECT target_id FROM delivery WHERE alert_id = ? AND channel = 'manual'", (alert_id,))
            return {r[0] for r in rows}

    async def wait_for(self, check: Callable[[], Any], within_s: float, what: str) -> None:
        deadline = time.monotonic() + within_s
        while not await check():
            if self.process is not None and self.process.returncode is not None:
                raise AssertionError(f"jiaoying serve exited with {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {within_s} s\n{self.log_tail()}")
            await asyncio.sleep(0.5)


@asynccontextmanager
async def county_on(kind: str, workdir: Path, sample: Path) -> AsyncIterator[tuple[County, MosquittoBroker | None]]:
    copy_database(sample, workdir / "jiaoying.db")
    broker = await start_mosquitto(workdir) if kind == "mosquitto" else None
    county = County(workdir, broker.url if broker else None)
    try:
        yield county, broker
    finally:
        await county.kill()
        await county.api.aclose()
        if broker is not None:
            await broker.stop()


@pytest.mark.parametrize("kind", ["mosquitto", "embedded"])
async def test_sirens_that_answered_while_the_engine_was_down_are_not_written_off(
    kind: str, tmp_path: Path, sample_db: Path
) -> None:
    sirens = sirens_of(sample_db)
    assert len(sirens) == 300, f"the sample has {len(sirens)} sirens"
    broken = frozenset(random.Random(5).sample(sirens, BROKEN))
    async with county_on(kind, tmp_path, sample_db) as (county, broker):
        await county.start()
        # each siren takes 0.5-3 s to say "received" and as long again to say "sounding"
        fleet = SimulatedSirenFleet(county.broker_url, sirens, silent=broken, seed=11, delay_s=(0.5, 3.0))
        await fleet.start()
        try:
            issued = (
                await county.api.post(
                    "/api/v1/alerts",
                    json={
                        "level": "red",
                        "hazard": "山洪",
                        "title": "全县山洪灾害红色预警",
                        "text": "全县山洪灾害红色预警。预计未来3小时有特大暴雨，山洪、泥石流极易发生。",
                        "instructions": "立即组织危险区群众转移",
                        "units": ["500238"],
                    },
                )
            ).json()
            alert_id = int(issued["id"])

            async def heard_enough() -> bool:
                return sum(1 for d in sirens if fleet.heard[d]) >= KILL_AFTER

            await county.wait_for(heard_enough, 60, f"{KILL_AFTER} sirens hearing their command")
            await county.kill()
            killed_at = time.monotonic()
            heard_at_kill = sum(1 for d in sirens if fleet.heard[d])
            if broker is not None:
                await asyncio.sleep(3)  # the sirens answer into the broker's queue for the engine ...
                await broker.stop()  # ... which a restart without persistence loses
                await broker.start()
            await asyncio.sleep(max(0.0, killed_at + ANSWER_WINDOW_S + 3 - time.monotonic()))
            answered_meanwhile = {d for d, _, status in fleet.acks_sent if status == "sounding"}
            await county.start()

            async def everyone_settled() -> bool:
                recipients = await county.all_of(f"/api/v1/alerts/{alert_id}/recipients")
                devices = [r for r in recipients if r["device_id"] in fleet.heard]
                tasks = county.task_targets(alert_id)
                return all(r["state"] == "answered" or r["target_id"] in tasks for r in devices)

            await county.wait_for(everyone_settled, 90, "every siren answered or stood in for by its village head")
            await asyncio.sleep(2)  # anything still on its way lands
            recipients = await county.all_of(f"/api/v1/alerts/{alert_id}/recipients")
            devices = {r["device_id"]: r for r in recipients if r["device_id"] in fleet.heard}
            tasks = county.task_targets(alert_id)
            audit = (await county.get(f"/api/v1/alerts/{alert_id}/audit", limit=100_000))["items"]
            listed = await county.all_of("/api/v1/devices")
        finally:
            await fleet.stop(announce_offline=False)

    assert set(devices) == set(sirens), f"{len(devices)} of the 300 sirens are recipients of the warning"
    asked_again = {d for e in audit if e["kind"] == "device.asked_again" for d in e["data"]["devices"]}
    sounded = {d for d in sirens if d not in broken}
    print(
        f"{kind}: {heard_at_kill} sirens had heard their command at the kill; {len(answered_meanwhile)} had sounded "
        f"by the restart; {len(asked_again)} asked again after it; {len(tasks)} tasks"
    )
    # without acks lost while the engine was down, this would test nothing
    assert len(asked_again - broken) >= 20, f"only {len(asked_again - broken)} sirens had lost their acks"
    problems = []
    not_recorded = sorted(d for d in sounded if devices[d]["state"] != "answered")
    if not_recorded:
        problems.append(f"{len(not_recorded)} sirens that sounded are not recorded answered: {not_recorded[:5]}")
    needless = sorted(d for d in sounded if devices[d]["target_id"] in tasks)
    if needless:
        problems.append(f"{len(needless)} village heads were sent to 鸣锣吹哨 for a siren that sounded: {needless[:5]}")
    stood_in = {d for d in broken if devices[d]["target_id"] in tasks}
    if stood_in != broken:
        problems.append(f"{len(broken - stood_in)} of the {BROKEN} broken sirens got nobody to stand in for them")
    replayed = sorted(d for d, n in fleet.played.items() if n > 1)
    if replayed:
        problems.append(f"{len(replayed)} sirens played the warning twice: {replayed[:5]}")
    offline = sorted(d["id"] for d in listed if d["kind"] == "siren" and not d["online"])
    if offline:
        problems.append(f"{len(offline)} of 300 sirens show offline though all are up: {offline[:5]}")
    assert not problems, "\n".join(problems)
