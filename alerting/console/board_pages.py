"""The live board: every active alert with its progress (being built)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from alerting.console.web import PREFIX, Seeing, render

router = APIRouter(include_in_schema=False)


@router.get(PREFIX + "/")
async def board(request: Request, who: Seeing) -> Response:
    return render(request, who, "board")
