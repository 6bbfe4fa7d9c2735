"""The numbers a request may carry in its path or query, bounded once for every route.

Unbounded, `/api/v1/alerts/9223372036854775808` or `?offset=10**20` reached the database driver, which cannot bind
such an integer (OverflowError on SQLite, a range error from asyncpg) and the request ended in a 500. Bounded here,
it is refused with a 422 naming the parameter, and the bound is in /openapi.json for clients to read.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query, Request

from alerting.web.api.problems import Problem

# PostgreSQL keeps alert ids and audit sequence numbers in a 4-byte INTEGER: no alert has a larger number,
# and no list holds more rows than such a number counts, so a larger offset could only ever skip everything
ROW_NUMBER_MAX = 2**31 - 1

AlertId = Annotated[int, Path(ge=1, le=ROW_NUMBER_MAX, description="the alert's number")]
"""An alert's number in a path."""
AlertFilter = Annotated[int | None, Query(ge=1, le=ROW_NUMBER_MAX, description="only this alert")]
"""An alert's number narrowing a list."""
Offset = Annotated[int, Query(ge=0, le=ROW_NUMBER_MAX, description="items to skip")]
"""How far into a list a page starts."""


def valid_alert_id(value: int) -> bool:
    """Whether `value` could be an alert's number: pages that show "no such alert" instead of a 422 ask this."""
    return 1 <= value <= ROW_NUMBER_MAX


async def no_nul_characters(request: Request) -> None:
    """Every route's dependency: a NUL in a path or query string is refused with a 422 naming the parameter.

    PostgreSQL's text cannot hold U+0000 and asyncpg fails the whole statement on one, so `?q=%00` on a search
    answered 500 there (SQLite took it and found nothing). No code, name or search term of ours contains one."""
    located = [("path", request.path_params.items()), ("query", request.query_params.multi_items())]
    bad = [(where, name) for where, items in located for name, value in items if "\x00" in str(value)]
    if bad:
        raise Problem(
            422,
            "validation",
            "The request is not valid",
            "check these fields: " + ", ".join(sorted({name for _, name in bad})),
            errors=[
                {"field": name, "location": where, "message": "must not contain a NUL character (U+0000)"}
                for where, name in bad
            ],
        )
