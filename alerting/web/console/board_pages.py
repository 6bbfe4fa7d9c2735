"""The live board: every active alert the viewer may see, its progress per township, the silent first.

The page is complete as served; /console/events streams a fresh snapshot whenever a number changes
and board.js puts it in place. Without JavaScript a <noscript> refresh keeps the page current.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import Response
from fastapi.sse import EventSourceResponse, ServerSentEvent

from alerting.model.access import Principal
from alerting.views.board import MEANING, Board, SharedReads, change_stamp, read_board, since_text
from alerting.web.api.auth import CoreDep
from alerting.web.console.web import PREFIX, SESSION_COOKIE, Seeing, render
from alerting.web.core import Core

log = structlog.get_logger()

router = APIRouter(include_in_schema=False)

POLL_S = 1.0
REREAD_S = 60.0  # read the board in full at least this often anyway: alerts age off the ended list by time
RECHECK_SESSION_S = 60.0  # a session that ended (sign-out elsewhere, expiry) stops its stream within this


def shared_reads() -> SharedReads:
    """Per app: the board reads every open stream shares."""
    return SharedReads(max_age_s=REREAD_S)


@router.get(PREFIX + "/")
async def board(request: Request, who: Seeing, core: CoreDep) -> Response:
    snapshot = await read_board(core.db, who.principal, now=core.clock.now())
    now = snapshot.generated_at
    return render(request, who, "board", board=snapshot, meaning=MEANING, since=lambda t: since_text(t, now))


async def board_stream(
    core: Core,
    principal: Principal,
    still_signed_in: Callable[[], Awaitable[bool]],
    *,
    poll_s: float = POLL_S,
    reads: SharedReads | None = None,
) -> AsyncGenerator[Board, None]:
    """A snapshot now, then another each time what the board shows changes. Each poll first reads the audit
    chain's end and the board only when that moved (shared with every other stream of the same scope); each
    read is its own short transaction, so nothing is held open however long the duty officer keeps the page."""
    reads = reads or SharedReads(max_age_s=REREAD_S)
    last = ""
    loop = asyncio.get_running_loop()
    checked = loop.time()
    while True:
        snapshot = await reads.read(core.db, principal, await change_stamp(core.db), core.clock.now())
        fingerprint = snapshot.fingerprint()
        if fingerprint != last:
            # a session ended meanwhile (signed out, account disabled) gets no further news
            if last and not await still_signed_in():
                return
            last = fingerprint
            yield snapshot
        await asyncio.sleep(poll_s)
        if loop.time() - checked >= RECHECK_SESSION_S:
            checked = loop.time()
            if not await still_signed_in():
                return


@router.get(PREFIX + "/events", response_class=EventSourceResponse)
async def events(request: Request, who: Seeing, core: CoreDep) -> AsyncIterator[ServerSentEvent]:
    """Server-sent events: `board` carries the whole snapshot (the same JSON as GET /api/v1/board).

    FastAPI adds a keep-alive comment whenever nothing was sent for a while, and cancels this generator
    when the browser goes away."""
    token = request.cookies.get(SESSION_COOKIE, "")

    async def still_signed_in() -> bool:
        return await core.accounts.session(token) is not None

    log.info("board.stream_opened", actor=who.principal.actor)
    try:
        async for snapshot in board_stream(core, who.principal, still_signed_in, reads=request.app.state.board_reads):
            yield ServerSentEvent(raw_data=snapshot.model_dump_json(), event="board", retry=3000)
    finally:
        log.info("board.stream_closed", actor=who.principal.actor)
