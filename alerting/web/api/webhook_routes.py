"""/webhooks/{name}/...: provider callbacks. The adapter checks and parses; the core records what it returns."""

from __future__ import annotations

from urllib.parse import parse_qsl

import structlog
from fastapi import APIRouter, Request, Response

from alerting.deliver.port import WebhookRequest
from alerting.web.api.auth import CoreDep
from alerting.web.api.metrics_routes import WEBHOOKS_REFUSED

log = structlog.get_logger()

router = APIRouter(tags=["webhooks"], include_in_schema=False)

# Provider callbacks are a few kilobytes (Twilio's form, WeCom's encrypted XML, a gateway's JSON); anything far
# larger is not one of them, and is refused before it is read whole.
MAX_WEBHOOK_BYTES = 64 * 1024


async def _body(request: Request) -> bytes | None:
    """The request body, or None when it is larger than a provider's callback can be."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_WEBHOOK_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_WEBHOOK_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _signed_url(public_url: str, request: Request) -> str:
    """The URL the provider called, as it saw it: behind a proxy that is JIAOYING_PUBLIC_URL, not our own address."""
    query = f"?{request.url.query}" if request.url.query else ""
    return f"{public_url.rstrip('/')}{request.url.path}{query}"


@router.api_route("/webhooks/{name}", methods=["GET", "POST"])
@router.api_route("/webhooks/{name}/{path:path}", methods=["GET", "POST"])
async def webhook(name: str, request: Request, core: CoreDep, path: str = "") -> Response:
    handler = core.webhooks.get(name)
    if handler is None or core.inbound is None:
        return Response(status_code=404)
    body = await _body(request)
    if body is None:
        log.warning("webhook.too_large", provider=name, path="/" + path, limit=MAX_WEBHOOK_BYTES)
        WEBHOOKS_REFUSED.labels(provider=name, status="413").inc()
        return Response(status_code=413)
    is_form = request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded")
    reply = await handler.handle(
        WebhookRequest(
            method=request.method,
            url=_signed_url(core.public_url, request),
            path="/" + path,
            headers={k.lower(): v for k, v in request.headers.items()},
            query=dict(request.query_params),
            form=dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)) if is_form else {},
            body=body,
        )
    )
    if reply.status >= 400:
        log.warning("webhook.refused", provider=name, path="/" + path, status=reply.status)
        WEBHOOKS_REFUSED.labels(provider=name, status=str(reply.status)).inc()
    for event in reply.events:
        await core.inbound(event)
    return Response(content=reply.body, status_code=reply.status, media_type=reply.content_type)
