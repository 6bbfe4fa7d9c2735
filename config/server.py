"""`jiaoying serve`: the HTTP API and the engine's loops in one process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
import uvicorn
from fastapi import FastAPI

from alerting.web.app import create_app
from config.settings import Settings
from config.wiring import Engine, build_engine
from escalation.rosters import warn_coverage_gaps

log = structlog.get_logger()


def make_app(engine: Engine) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await engine.start()
        log.info("engine.started", public_url=engine.settings.public_url)
        try:
            yield
        finally:
            await engine.stop()

    return create_app(engine.core, lifespan=lifespan)


def uvicorn_config(app: FastAPI, settings: Settings, host: str, port: int) -> uvicorn.Config:
    # only the proxies named here may say who the client is (X-Forwarded-For) and that it came over https
    # (X-Forwarded-Proto, which decides the Secure cookie); from anyone else those headers are ignored
    trusted = settings.forwarded_allow_ips
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or None,
        timeout_graceful_shutdown=5,  # open live-board streams never end by themselves; give them a few seconds
    )


async def serve(settings: Settings, host: str, port: int) -> None:
    engine = build_engine(settings)
    await engine.db.upgrade()
    # a duty room with nobody on duty tonight should hear it now, not at the first escalation
    await warn_coverage_gaps(engine.db, now=engine.clock.now())
    if not await engine.core.accounts.list():
        log.warning("console.no_accounts", hint="nobody can sign in yet: jiaoying account add <name> --role admin")
    server = uvicorn.Server(uvicorn_config(make_app(engine), settings, host, port))
    log.info("console.ready", url=f"http://{host}:{port}/console/", public_url=engine.settings.public_url)
    await server.serve()
