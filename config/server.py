"""`jiaoying serve`: the HTTP API and, on a thread and event loop of their own, the engine's loops."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
import uvicorn
from fastapi import FastAPI

from alerting.audit import configured
from alerting.web.app import create_app
from alerting.web.core import Core
from config.engine_thread import EngineThread
from config.settings import Settings
from config.wiring import AssembledEngine, build_engine, web_core
from escalation.rosters import warn_coverage_gaps

log = structlog.get_logger()


def make_app(engine: AssembledEngine) -> FastAPI:
    """The web app over its own copy of the core; the engine's loops run on their own thread (EngineThread)."""
    runner = EngineThread(engine)
    core = web_core(engine, wake=runner.wake)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runner.start()
        log.info("engine.started", public_url=engine.settings.public_url, loop="own thread")
        try:
            yield
        finally:
            await runner.stop()
            await core.db.close()

    return create_app(core, lifespan=lifespan)


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
    configured.current().keyring.signer()  # no audit key: refuse in one line here, not in the engine's thread
    if engine.checkpointer is not None:  # nor a checkpoint file it cannot write
        await engine.checkpointer.check_writable()
    app = make_app(engine)
    core: Core = app.state.core  # the web's: the engine's own store connection belongs to the engine's loop
    await core.db.upgrade()
    # a duty room with nobody on duty tonight should hear it now, not at the first escalation
    await warn_coverage_gaps(core.db, now=core.clock.now())
    if not await core.accounts.list():
        log.warning("console.no_accounts", hint="nobody can sign in yet: jiaoying account add <name> --role admin")
    server = uvicorn.Server(uvicorn_config(app, settings, host, port))
    log.info("console.ready", url=f"http://{host}:{port}/console/", public_url=settings.public_url)
    await server.serve()
