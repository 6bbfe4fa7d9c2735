"""The live board: every active alert the viewer may see, its progress per township, the silent first.

The page is complete as served; /console/events streams a fresh snapshot whenever a number changes
and board.js puts it in place. Without JavaScript a <noscript> refresh keeps the page current.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import Response
from fastapi.sse import EventSourceResponse, ServerSentEvent

from alerting.model.access import Principal
from alerting.views.board import MEANING, Board, since_text
from alerting.views.board_hub import BoardHub
from alerting.web.api.auth import CoreDep
from alerting.web.console.web import PREFIX, SESSION_COOKIE, Seeing, render
from alerting.web.core import Core

log = structlog.get_logger()

router = APIRouter(include_in_schema=False)

RECHECK_SESSION_S = 60.0  # a session that ended (sign-out elsewhere, expiry) stops its stream within this


def board_hub(core: Core) -> BoardHub:
    """Per app: one board read per change and scope, for every stream, page and poller."""
    return BoardHub(core.db, core.clock)


@router.get(PREFIX + "/")
async def board(request: Request, who: Seeing, core: CoreDep) -> Response:
    hub: BoardHub = request.app.state.board_hub
    snapshot = (await hub.latest(who.principal)).for_viewer(who.principal)
    now = snapshot.generated_at
    alarm = max((a.alarm for a in snapshot.alerts), key=lambda a: a.level, default=None)
    return render(
        request,
        who,
        "board",
        board=snapshot,
        alarm=alarm if alarm is not None and alarm.level else None,
        meaning=MEANING,
        since=lambda t: since_text(t, now),
    )


async def board_stream(
    core: Core,
    principal: Principal,
    still_signed_in: Callable[[], Awaitable[bool]],
    *,
    hub: BoardHub | None = None,
    poll_s: float = 1.0,
) -> AsyncGenerator[Board, None]:
    """A snapshot now, then another each time what the board shows changes (the hub's, shared with every
    stream of the same scope). A session that ended meanwhile (signed out, account disabled) gets no further
    news: checked at each change and every RECHECK_SESSION_S while nothing changes."""
    own = hub is None
    hub = hub or BoardHub(core.db, core.clock, poll_s=poll_s, min_gap_s=poll_s)
    snapshots = hub.follow(principal, quiet_s=RECHECK_SESSION_S)
    try:
        first = await anext(snapshots)  # the caller has just been let in
        assert first is not None
        yield first
        async for snapshot in snapshots:
            if not await still_signed_in():
                return
            if snapshot is not None:
                yield snapshot
    finally:
        await snapshots.aclose()
        if own:
            await hub.close()


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
        async for snapshot in board_stream(core, who.principal, still_signed_in, hub=request.app.state.board_hub):
            shown = snapshot.for_viewer(who.principal)  # an auditor's copy has no numbers to dial
            yield ServerSentEvent(raw_data=shown.model_dump_json(), event="board", retry=3000)
    finally:
        log.info("board.stream_closed", actor=who.principal.actor)
