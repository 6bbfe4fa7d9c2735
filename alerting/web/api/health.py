"""/healthz: is the database answering, and which channels are real and which are sandboxes."""

from __future__ import annotations

import asyncio

import structlog
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from alerting.store.db import Database
from alerting.web.api.auth import CoreDep
from alerting.web.api.schemas import ChannelOut, HealthOut

log = structlog.get_logger()

router = APIRouter(tags=["health"])

DB_TIMEOUT_S = 3.0


async def database_answers(db: Database) -> bool:
    async def ping() -> None:
        async with db.session() as s:
            await s.execute(text("SELECT 1"))

    try:
        await asyncio.wait_for(ping(), DB_TIMEOUT_S)
    except Exception as exc:  # any failure means the same thing to a load balancer: not ready
        log.warning("health.database_down", error=str(exc))
        return False
    return True


@router.get("/healthz", response_model=HealthOut, responses={503: {"model": HealthOut}})
async def healthz(core: CoreDep) -> JSONResponse:
    """200 while the database answers (status "degraded" while a provider's circuit is open), 503 when it does not."""
    ok = await database_answers(core.db)
    channels = []
    for c in core.channels:
        breaker = core.breakers.get(c.kind)
        channels.append(
            ChannelOut(
                kind=c.kind,
                provider=c.provider,
                sandbox=c.sandbox,
                circuit=breaker.state.value if breaker else "closed",
                last_error=breaker.last_error if breaker and breaker.state != "closed" else None,
            )
        )
    degraded = any(ch.circuit == "open" for ch in channels)
    body = HealthOut(
        status="unavailable" if not ok else "degraded" if degraded else "ok",
        database="ok" if ok else "unavailable",
        channels=channels,
    )
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503, headers={"Cache-Control": "no-store"})
