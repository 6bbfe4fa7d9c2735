"""A real `jiaoying serve` on the 巫溪 sample, with a fake Twilio on loopback, for the browser tests.

The server is a separate process started the way a county would start it; SMS and calls go to the
fake, so a test can read the answer link out of the SMS the grid worker got.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from tests.fakes.server import free_port
from tests.fakes.twilio import FakeTwilio

DUTY_PHONE = "023-51521234"  # the county duty room, on every answer page
JIAOYING = [str(Path(sys.executable).parent / "jiaoying")]  # the installed command, as a county runs it
LINK = re.compile(r"https?://\S+/ack/[A-Za-z0-9_-]+")

# name -> (password, role, unit, display name); 500238101 is 凤凰镇
ACCOUNTS: dict[str, tuple[str, str, str | None, str]] = {
    "duty": ("duty-pass-0001", "duty", None, "王值班"),
    "fenghuang": ("town-pass-0001", "township", "500238101", "凤凰镇李娜"),
    "auditor": ("audit-pass-001", "auditor", None, "审计赵敏"),
    "admin": ("admin-pass-001", "admin", None, "管理员"),
}


class ThreadedServer:
    """An ASGI app served by uvicorn on its own thread and event loop, beside synchronous tests."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=lambda: asyncio.run(self._server.serve()), daemon=True)

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake provider did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@dataclass
class Served:
    url: str
    env: dict[str, str]
    twilio: FakeTwilio
    log: Path

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*JIAOYING, *args], env=self.env, input=stdin, capture_output=True, text=True, timeout=120, check=False
        )

    def sms_to(self, phone: str) -> list[str]:
        return [m.field("Body") or "" for m in self.twilio.created("Messages") if m.field("To") == phone]

    def answer_link(self, phone: str, timeout: float = 20) -> str:
        """The answer link in the most recent SMS to this number, waiting for the SMS to be sent."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for body in reversed(self.sms_to(phone)):
                if found := LINK.search(body):
                    return found.group(0)
            time.sleep(0.1)
        raise AssertionError(f"no SMS with an answer link reached {phone} within {timeout} s")


def _check(done: subprocess.CompletedProcess[str]) -> None:
    if done.returncode != 0:
        raise RuntimeError(f"{done.args} failed: {done.stderr[-2000:]}")


@contextmanager
def serve_sample(workdir: Path) -> Iterator[Served]:
    """Sample data, the accounts above, and `jiaoying serve` on a free port; stopped afterwards."""
    twilio = FakeTwilio()
    with ThreadedServer(twilio.app) as fake:
        port = free_port()
        env = {
            **os.environ,
            "JIAOYING_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'jiaoying.db'}",
            "JIAOYING_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "JIAOYING_SECRET_KEY": "browser-test-secret-key-0123456789",
            "JIAOYING_DUTY_PHONE": DUTY_PHONE,
            "JIAOYING_MQTT_EMBEDDED_PORT": str(free_port()),
            "JIAOYING_TWILIO_ACCOUNT_SID": twilio.account_sid,
            "JIAOYING_TWILIO_AUTH_TOKEN": twilio.auth_token,
            "JIAOYING_TWILIO_FROM_NUMBER": "+15005550006",
            "JIAOYING_TWILIO_BASE_URL": fake.url,
            "JIAOYING_TWILIO_SMS_PER_SECOND": "200",
            "JIAOYING_TWILIO_CALLS_PER_SECOND": "200",
            "JIAOYING_API_KEYS": '["browser-duty-key:duty","browser-audit-key:auditor"]',
        }
        served = Served(f"http://127.0.0.1:{port}", env, twilio, workdir / "serve.log")
        _check(served.cli("sample-data"))
        for name, (password, role, unit, display) in ACCOUNTS.items():
            args = ["account", "add", name, "--role", role, "--name", display, "--password-stdin"]
            _check(served.cli(*args, *(["--unit", unit] if unit else []), stdin=password + "\n"))
        with served.log.open("w") as log:
            process = subprocess.Popen(
                [*JIAOYING, "serve", "--host", "127.0.0.1", "--port", str(port)],
                env=env,
                cwd=workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                _wait_healthy(served, process)
                yield served
            finally:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _wait_healthy(served: Served, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"jiaoying serve exited with {process.returncode}: {served.log.read_text()[-3000:]}")
        try:
            if httpx.get(served.url + "/healthz", timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"jiaoying serve did not come up: {served.log.read_text()[-3000:]}")
