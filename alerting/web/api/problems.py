"""RFC 9457 problem details: every API error, whoever raised it, leaves as application/problem+json."""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

log = structlog.get_logger()

MEDIA_TYPE = "application/problem+json"
# tag URIs (RFC 4151) name a problem kind without promising a page behind it, which RFC 9457 allows
TYPE_PREFIX = "tag:jiaoying,2026:problem/"


class FieldError(BaseModel):
    field: str  # dotted path inside its location, e.g. "units.0"
    location: str  # body, query, path, header
    pointer: str | None = None  # JSON pointer into the body, for body fields
    message: str


class ProblemBody(BaseModel):
    """The shape of every error body; documented once for /docs."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None


class Problem(Exception):
    """Raise anywhere in a route: the handler turns it into a problem response."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status, self.slug, self.title, self.detail = status, slug, title, detail
        self.headers = headers
        self.extra = extra


def problem_response(
    request: Request,
    status: int,
    slug: str | None,
    title: str,
    detail: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        # about:blank means "nothing beyond the HTTP status"; the RFC says its title is the status phrase
        "type": TYPE_PREFIX + slug if slug else "about:blank",
        "title": title,
        "status": status,
        "instance": request.url.path,
    }
    if detail:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        where, path = (loc[0], loc[1:]) if loc else ("body", [])
        message = str(err.get("msg", "invalid"))
        if err.get("type") == "json_invalid":
            path, message = [], "the body is not valid JSON: " + str(err.get("ctx", {}).get("error", message))
        item: dict[str, Any] = {"field": ".".join(path) or where, "location": where, "message": message}
        if where == "body":
            item["pointer"] = "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in path)
        out.append(item)
    return out


async def _on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return problem_response(request, exc.status, exc.slug, exc.title, exc.detail, headers=exc.headers, **exc.extra)


async def _on_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = field_errors(exc)
    names = ", ".join(sorted({e["field"] for e in errors}))
    return problem_response(
        request,
        422,
        "validation",
        "The request is not valid",
        f"check these fields: {names}",
        errors=errors,
    )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


# Pages for people (the ack page) answer errors in HTML; it returns None for API paths.
HtmlError = Callable[[Request, int], Response | None]


def install(app: FastAPI, html_error: HtmlError | None = None) -> None:
    def as_page(request: Request, status: int) -> Response | None:
        return html_error(request, status) if html_error else None

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if (page := as_page(request, exc.status_code)) is not None:
            return page
        phrase = _phrase(exc.status_code)
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != phrase else None
        return problem_response(request, exc.status_code, None, phrase, detail, headers=dict(exc.headers or {}))

    async def on_crash(request: Request, exc: Exception) -> Response:
        log.exception("api.unhandled", path=request.url.path, method=request.method)
        if (page := as_page(request, 500)) is not None:
            return page
        return problem_response(request, 500, "internal", "Internal Server Error", "the error was logged")

    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_crash)


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries saying these statuses come back as problem+json."""
    return {s: {"model": ProblemBody, "content": {MEDIA_TYPE: {}}, "description": "problem details"} for s in statuses}
