"""The FastAPI application: the JSON API for the duty room and auditors, and the phone answer page."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI

from alerting.api import ack_routes, alert_routes, health, problems, webhook_routes
from alerting.core import Core

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]] | Callable[[FastAPI], AsyncIterator[None]]

DESCRIPTION = """
叫应 (jiaoying): issue a warning to every responsible person down the grid hierarchy, follow who has
answered 收到, and lift it. Authenticate with an API key in `X-API-Key` (or `Authorization: Bearer`);
its role decides what it may do: **duty** and **admin** issue and cancel, **auditor** reads.
Every error is `application/problem+json` (RFC 9457).
"""


def create_app(core: Core, *, lifespan: Lifespan | None = None) -> FastAPI:
    """The app serving `core`. `lifespan` starts and stops whatever runs beside it (dispatcher, escalation)."""
    app = FastAPI(
        title="jiaoying 叫应",
        version="1",
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
        lifespan=lifespan,  # type: ignore[arg-type]
    )
    app.state.core = core
    problems.install(app, html_error=ack_routes.html_error)
    ack_routes.templates()  # read the page templates now rather than during the first answer
    app.include_router(alert_routes.router)
    app.include_router(ack_routes.router)
    app.include_router(health.router)
    app.include_router(webhook_routes.router)
    return app
