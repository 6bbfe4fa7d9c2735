"""A real `jiaoying serve` on the 巫溪 sample, sending through a paced fake Twilio: the harness of test_paced_twilio.

The fake (tests/fakes/twilio.py with `Paced`) runs on a free loopback port inside the test process, so its log
of every create and callback is on the same monotonic clock as the test's own "the duty officer's request
returned". The engine is the installed `jiaoying serve`, a separate process started the way a county starts
it, on a copy of the sample database; the test acts as the duty officer over the JSON API with a duty key and
reads the SQLite file (read-only) only to cross-check the rows against the API, the audit and the fake.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from alerting.model.domain import DeliveryState, Purpose
from tests.fakes.server import free_port, serve_app
from tests.fakes.twilio import FakeTwilio, Paced, Received, Resource

JIAOYING = [str(Path(sys.executable).parent / "jiaoying")]  # the installed command, as a county runs it
DUTY_KEY = "paced-duty-key"
FROM_NUMBER = "+15005550006"
NODE = "paced-host"  # every run of the engine is the same machine: a restart takes over its predecessor's work
READY_S = 45.0  # a cold interpreter importing the engine and migrating, on a busy machine
QUIET_S = 1.0  # no create reached the fake for this long: the burst is over

# Short, flat plans: one wave, a long answer window (nothing escalates while a test runs), no sirens.
POLICY = """\
levels:
  red:
    person_steps: [{who: target, channels: [voice], wait_s: 900}]
  orange:
    person_steps: [{who: target, channels: [voice, sms], wait_s: 900}]
  yellow:
    person_steps: [{who: target, channels: [sms, wecom], wait_s: 900}]
  blue:
    person_steps: [{who: target, channels: [sms], wait_s: 900}]
"""

# The sample's townships with the most primary responsible people (sample seed 2024).
# 双阳乡 81, 塘坊镇 65, 古路镇 57, 文峰镇 57, 乌龙乡 56: a yellow warning to all five is 316 SMS.
BURST_UNITS = ("500238240", "500238111", "500238104", "500238105", "500238227")
TWO_TOWNSHIPS = BURST_UNITS[:2]  # 146 people
ONE_TOWNSHIP = BURST_UNITS[:1]  # 81 people
SMALL_VILLAGE = "500238001002"  # 和街社区 in 宁河街道: 4 people, outside the townships above

# what a delivery can end as
TERMINAL = frozenset(
    s.value for s in (DeliveryState.SENT, DeliveryState.DELIVERED, DeliveryState.FAILED, DeliveryState.CANCELLED)
)
# the provider took it (failed: it reported so later)
SENT_STATES = frozenset(s.value for s in (DeliveryState.SENT, DeliveryState.DELIVERED, DeliveryState.FAILED))
WARN, LIFT = Purpose.WARN.value, Purpose.LIFT.value
LIFT_MARK = "已解除"  # the lift notice's wording (alerting/deliver/messages.py: "{level}{hazard}预警已解除")


async def until_serving(
    process: asyncio.subprocess.Process, api: httpx.AsyncClient, log_tail: Callable[[], str]
) -> None:
    """Until the started `jiaoying serve` answers /healthz; its log's tail in the error if it exits or hangs."""
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise RuntimeError(f"jiaoying serve exited with {process.returncode}:\n{log_tail()}")
        try:
            if (await api.get("/healthz", timeout=2)).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"jiaoying serve did not come up within {READY_S} s:\n{log_tail()}")


def engine_env(workdir: Path, db: Path) -> dict[str, str]:
    """The environment of every `jiaoying` command a test runs: nothing of the developer's JIAOYING_ settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JIAOYING_")}
    env.update(
        JIAOYING_DATABASE_URL=f"sqlite+aiosqlite:///{db}",
        JIAOYING_CONFIG=str(workdir / "no-such-config.toml"),
        JIAOYING_SECRET_KEY="paced-test-secret-key-0123456789",
        JIAOYING_AUDIT_KEY="paced-test-audit-key-0123456789abcdef",
        JIAOYING_NODE=NODE,
        JIAOYING_LOG_LEVEL="info",
    )
    return env


def make_sample(directory: Path) -> Path:
    """`jiaoying sample-data` into a fresh file once; tests start from copies of it."""
    db = directory / "sample.db"
    done = subprocess.run(
        [*JIAOYING, "sample-data"],
        env=engine_env(directory, db),
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"jiaoying sample-data failed: {done.stderr[-3000:]}")
    return db


def copy_database(source: Path, target: Path) -> None:
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


# ---- what the provider saw ---------------------------------------------------------------------


def taken(twilio: FakeTwilio, resource: Resource) -> list[Received]:
    """Creates Twilio accepted (201), in the order they reached it."""
    return [r for r in twilio.received if r.resource == resource and r.sid]


def warnings(twilio: FakeTwilio, title: str, resource: Resource = "Messages") -> list[Received]:
    """The warnings of the alert titled `title` that Twilio accepted."""
    return [r for r in taken(twilio, resource) if title in r.text and LIFT_MARK not in r.text]


def lift_notices(twilio: FakeTwilio, resource: Resource = "Messages") -> list[Received]:
    """The 解除 notices Twilio accepted."""
    return [r for r in taken(twilio, resource) if LIFT_MARK in r.text]


# ---- what the store says -------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One delivery row, as stored."""

    id: str
    target_id: str
    person_id: str | None
    channel: str
    purpose: str
    state: str
    error: str | None
    attempts: int


@dataclass(frozen=True)
class Issued:
    id: int
    targets: int
    by_channel: dict[str, int]
    returned_at: float  # time.monotonic() when the API answered


@dataclass(frozen=True)
class Lifted:
    id: int
    cancelled_deliveries: int
    lift_notices: int
    returned_at: float


# ---- the county ----------------------------------------------------------------------------------


@dataclass
class PacedCounty:
    """The sample county's engine (`jiaoying serve`, restartable) against the paced fake, and the duty officer's
    API client."""

    workdir: Path
    twilio: FakeTwilio
    twilio_url: str
    sms_per_second: float
    calls_per_second: float
    policy: str = POLICY
    port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = None
    runs: int = 0
    api: httpx.AsyncClient = field(init=False)

    def __post_init__(self) -> None:
        self.api = httpx.AsyncClient(base_url=self.url, headers={"X-API-Key": DUTY_KEY}, timeout=60.0, trust_env=False)
        (self.workdir / "policy.yaml").write_text(self.policy, encoding="utf-8")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db(self) -> Path:
        return self.workdir / "jiaoying.db"

    def log_file(self, run: int | None = None) -> Path:
        return self.workdir / f"serve-{self.runs if run is None else run}.log"

    def log_tail(self, chars: int = 3000) -> str:
        path = self.log_file()
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"

    def env(self) -> dict[str, str]:
        env = engine_env(self.workdir, self.db)
        env.update(
            JIAOYING_PUBLIC_URL=self.url,  # the fake's callbacks come back to this very process
            JIAOYING_POLICY_FILE=str(self.workdir / "policy.yaml"),
            JIAOYING_API_KEYS=f'["{DUTY_KEY}:duty"]',
            JIAOYING_MQTT_EMBEDDED_PORT=str(free_port()),
            JIAOYING_TWILIO_ACCOUNT_SID=self.twilio.account_sid,
            JIAOYING_TWILIO_AUTH_TOKEN=self.twilio.auth_token,
            JIAOYING_TWILIO_FROM_NUMBER=FROM_NUMBER,
            JIAOYING_TWILIO_BASE_URL=self.twilio_url,
            JIAOYING_TWILIO_SMS_PER_SECOND=str(self.sms_per_second),
            JIAOYING_TWILIO_CALLS_PER_SECOND=str(self.calls_per_second),
        )
        return env

    # ---- the process ----------------------------------------------------------------------------

    async def start(self) -> None:
        """`jiaoying serve` on the same port and database as every run before; back when /healthz answers."""
        assert self.process is None or self.process.returncode is not None, "the engine is already running"
        self.runs += 1
        with self.log_file().open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                *JIAOYING,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                env=self.env(),
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        await until_serving(self.process, self.api, self.log_tail)

    async def kill(self, sig: int = signal.SIGKILL, grace_s: float = 15.0) -> None:
        """SIGKILL: the machine loses power. SIGTERM: a clean stop (the engine finishes its shutdown)."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.send_signal(sig)
        try:
            async with asyncio.timeout(grace_s):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()

    async def close(self) -> None:
        await self.kill(signal.SIGKILL)
        await self.api.aclose()
        await self.twilio.aclose()

    # ---- the duty officer -------------------------------------------------------------------------

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.api.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise AssertionError(f"{method} {path} answered {response.status_code}: {response.text[:1000]}")
        return response.json()

    async def issue(self, level: str, title: str, units: Iterable[str], *, hazard: str = "暴雨") -> Issued:
        """发布预警 over the API."""
        body = {
            "level": level,
            "hazard": hazard,
            "title": title,
            "text": f"{title}。预计未来3小时有强降雨，局地可能引发山洪和地质灾害。",
            "instructions": "请立即巡查责任区，做好人员转移准备",
            "units": list(units),
        }
        out = await self._json("POST", "/api/v1/alerts", json=body)
        return Issued(int(out["id"]), int(out["targets"]), dict(out["by_channel"]), time.monotonic())

    async def cancel(self, alert_id: int, reason: str = "雨情减弱，解除预警") -> Lifted:
        """解除 over the API."""
        out = await self._json("POST", f"/api/v1/alerts/{alert_id}/cancel", json={"reason": reason})
        return Lifted(alert_id, int(out["cancelled_deliveries"]), int(out["lift_notices"]), time.monotonic())

    async def answer_for(self, alert_id: int, target_id: str, reason: str = "已电话联系本人，确认收到") -> float:
        """代为确认 over the API; returns time.monotonic() when the answer came back."""
        path = f"/api/v1/alerts/{alert_id}/recipients/{target_id}/answer"
        await self._json("POST", path, json={"reason": reason})
        return time.monotonic()

    async def recipients(self, alert_id: int) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            page = await self._json(
                "GET", f"/api/v1/alerts/{alert_id}/recipients", params={"limit": 1000, "offset": len(items)}
            )
            items += page["items"]
            if len(items) >= page["total"] or not page["items"]:
                return items

    async def audit(self, alert_id: int) -> list[dict[str, Any]]:
        page = await self._json("GET", f"/api/v1/alerts/{alert_id}/audit", params={"limit": 100_000})
        return list(page["items"])

    async def deliveries(self, alert_id: int) -> dict[str, dict[str, int]]:
        """The alert's deliveries by channel and state, as the board and `alert status` count them."""
        detail = await self._json("GET", f"/api/v1/alerts/{alert_id}")
        return {str(k): {str(s): int(n) for s, n in v.items()} for k, v in detail["progress"]["deliveries"].items()}

    async def phones(self, units: Iterable[str]) -> dict[str, str]:
        """person id -> phone number, for everyone answering for the units' subtrees (a duty key sees numbers)."""
        found: dict[str, str] = {}
        for unit in units:
            offset = 0
            while True:
                params: dict[str, str | int] = {"unit": unit, "limit": 500, "offset": offset}
                page = await self._json("GET", "/api/v1/people", params=params)
                found.update({p["id"]: p["phone"] for p in page["items"] if p["phone"]})
                offset += len(page["items"])
                if offset >= page["total"] or not page["items"]:
                    break
        return found

    # ---- waiting ----------------------------------------------------------------------------------

    def _watch(self) -> None:
        if self.process is not None and self.process.returncode is not None:
            raise AssertionError(f"jiaoying serve exited with {self.process.returncode}:\n{self.log_tail()}")

    async def poll(self, check: Callable[[], bool], within_s: float, step_s: float = 0.05) -> bool:
        """Whether `check` came to hold within `within_s` (the engine must stay up meanwhile)."""
        deadline = time.monotonic() + within_s
        while not check():
            self._watch()
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(step_s)
        return True

    async def wait_for(self, check: Callable[[], bool], within_s: float, what: str) -> None:
        if not await self.poll(check, within_s):
            raise AssertionError(f"{what}: not within {within_s} s\n{self.log_tail()}")

    async def wait_sent_out(self, alert_ids: Iterable[int], within_s: float) -> None:
        """Until nothing of these alerts is left to send, Twilio has heard nothing new for a second, and every
        status callback has been answered."""
        ids = list(alert_ids)
        deadline = time.monotonic() + within_s
        while True:
            self._watch()
            open_ = {
                (a, channel, state): n
                for a in ids
                for channel, states in (await self.deliveries(a)).items()
                for state, n in states.items()
                if state not in TERMINAL
            }
            if not open_ and self.twilio.idle_s() >= QUIET_S and not self.twilio.reporting:
                await self.twilio.settle()
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"still being sent after {within_s} s: {open_}, Twilio idle {self.twilio.idle_s():.1f} s\n"
                    f"{self.log_tail()}"
                )
            await asyncio.sleep(0.25)

    # ---- the store, read-only -----------------------------------------------------------------------

    def rows(self, alert_id: int) -> list[Row]:
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30) as con:
            found = con.execute(
                "SELECT id, target_id, person_id, channel, purpose, state, error, attempts"
                " FROM delivery WHERE alert_id = ?",
                (alert_id,),
            ).fetchall()
        return [Row(*r) for r in found]


@asynccontextmanager
async def paced_county(
    workdir: Path,
    sample: Path,
    world: Paced,
    *,
    sms_per_second: float = 20.0,
    calls_per_second: float = 2.0,
    policy: str = POLICY,
) -> AsyncIterator[PacedCounty]:
    """The fake on loopback, a copy of the sample database and `jiaoying serve` started; all stopped afterwards."""
    copy_database(sample, workdir / "jiaoying.db")
    twilio = FakeTwilio(paced=world)
    async with serve_app(twilio.app) as twilio_url:
        county = PacedCounty(workdir, twilio, twilio_url, sms_per_second, calls_per_second, policy)
        try:
            await county.start()
            yield county
        finally:
            await county.close()
