"""`jiaoying serve` believes X-Forwarded-For only from the proxies in JIAOYING_FORWARDED_ALLOW_IPS."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from pydantic import ValidationError

from config.server import uvicorn_config
from config.settings import Settings
from tests.fakes.server import free_port


def who_asks() -> FastAPI:
    """An app that says which address it was called from: what the sign-in limiter counts."""
    app = FastAPI()

    @app.get("/who")
    async def who(request: Request) -> dict[str, str | None]:
        return {"client": request.client.host if request.client else None, "scheme": request.url.scheme}

    return app


async def ask_through_a_proxy(settings: Settings) -> dict[str, str]:
    """Serve with `serve`'s own uvicorn settings on loopback and call it as a proxy on this machine would."""
    port = free_port()
    config = uvicorn_config(who_asks(), settings, "127.0.0.1", port)
    config.lifespan, config.log_level = "off", "warning"
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:  # noqa: ASYNC110 (uvicorn offers no event to wait on)
                await asyncio.sleep(0.01)
        headers = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://127.0.0.1:{port}/who", headers=headers)
        answer: dict[str, str] = r.json()
        return answer
    finally:
        server.should_exit = True
        await task


async def test_a_proxy_on_this_machine_is_believed_by_default() -> None:
    answer = await ask_through_a_proxy(Settings())
    assert answer == {"client": "203.0.113.7", "scheme": "https"}


async def test_with_no_trusted_proxy_the_headers_are_ignored() -> None:
    answer = await ask_through_a_proxy(Settings(forwarded_allow_ips=""))
    assert answer == {"client": "127.0.0.1", "scheme": "http"}


async def test_a_proxy_elsewhere_is_believed_only_when_named() -> None:
    answer = await ask_through_a_proxy(Settings(forwarded_allow_ips="10.0.0.5"))
    assert answer == {"client": "127.0.0.1", "scheme": "http"}  # loopback is not the named proxy
    config = uvicorn_config(who_asks(), Settings(forwarded_allow_ips="10.0.0.5, 10.1.0.0/16"), "127.0.0.1", 8000)
    assert config.proxy_headers and config.forwarded_allow_ips == "10.0.0.5, 10.1.0.0/16"


def test_the_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JIAOYING_FORWARDED_ALLOW_IPS", "192.168.1.10")
    assert Settings().forwarded_allow_ips == "192.168.1.10"


@pytest.mark.parametrize("typo", ["10.0.0.5;10.0.0.6", "proxy.local", "10.0.0.1/8"])
def test_a_proxy_that_is_no_address_is_refused_at_start(typo: str) -> None:
    with pytest.raises(ValidationError, match="forwarded_allow_ips"):
        Settings(forwarded_allow_ips=typo)


def test_the_duty_room_s_number_is_checked_at_start() -> None:
    assert Settings(duty_phone=" 023-51521234 ").duty_phone == "023-51521234"
    assert Settings(duty_phone="").duty_phone is None
    with pytest.raises(ValidationError, match="duty_phone"):
        Settings(duty_phone="县值班室")
