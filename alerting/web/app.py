"""The FastAPI application: the JSON API for the duty room and auditors, and the phone answer page."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from importlib.resources import files

from fastapi import Depends, FastAPI, Request
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from alerting.model.access import Forbidden
from alerting.web.answer import routes as ack_routes
from alerting.web.api import (
    account_routes,
    action_routes,
    alert_routes,
    cap_routes,
    directory_routes,
    health,
    metrics_routes,
    numbers,
    problems,
    review_routes,
    sandbox_routes,
    unit_routes,
    webhook_routes,
)
from alerting.web.console import (
    accounts_pages,
    board_pages,
    cap_pages,
    detail_pages,
    directory_pages,
    issue_pages,
    review_pages,
    sandbox_pages,
    signin_pages,
    web,
)
from alerting.web.core import Core
from alerting.web.shedding import ReadShedder

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]] | Callable[[FastAPI], AsyncIterator[None]]

DESCRIPTION = """
叫应 (jiaoying): issue a warning to every responsible person down the grid hierarchy, follow who has
answered 收到, and lift it. Everything the console pages do is here too.

Authenticate with an API key in `X-API-Key` (or `Authorization: Bearer`); its role decides what it may do:
**duty** and **admin** issue and act county-wide, **township** keys (configured as `key:township:<unit code>`)
do the same inside their own subtree and see nothing outside it, **auditor** reads. Lists are paged with
`limit` and `offset` and say how many there are in all. Every error is `application/problem+json` (RFC 9457).
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
        dependencies=[Depends(numbers.no_nul_characters)],  # before any route's own parameters reach the database
    )
    app.state.core = core
    app.state.sign_in_attempts = signin_pages.attempts_limit()
    app.state.board_hub = board_pages.board_hub(core)
    app.state.read_shedder = ReadShedder()
    # pages travel over weak mobile links; Starlette leaves server-sent event streams uncompressed
    app.add_middleware(GZipMiddleware, minimum_size=1000)
    problems.install(app, html_error=_html_error)
    app.add_exception_handler(web.SignInRequired, web.on_sign_in_required)
    app.add_exception_handler(web.PageError, web.on_page_error)
    app.add_exception_handler(Forbidden, web.on_forbidden)
    ack_routes.templates()  # read the page templates now rather than during the first answer
    for api in (alert_routes, action_routes, unit_routes, directory_routes, review_routes, account_routes):
        app.include_router(api.router)
    app.include_router(sandbox_routes.router)
    app.include_router(cap_routes.router)
    app.include_router(ack_routes.router)
    app.include_router(health.router)
    app.include_router(metrics_routes.router)
    app.include_router(webhook_routes.router)
    for console in (
        signin_pages,
        board_pages,
        issue_pages,
        detail_pages,
        directory_pages,
        review_pages,
        accounts_pages,
        sandbox_pages,
        cap_pages,
    ):
        app.include_router(console.router)
    app.mount("/static", StaticFiles(directory=str(files("alerting.web") / "static")), name="static")
    return app


def _html_error(request: Request, status: int) -> Response | None:
    return ack_routes.html_error(request, status) or web.html_error(request, status)
