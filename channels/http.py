"""HTTP concerns every provider adapter shares: one pooled client, classifying failures, keeping secrets out.

Adapters call these instead of each deciding what a 429 or a timeout means.
"""

from __future__ import annotations

import contextlib
import logging
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from alerting.deliver.port import DeliveryError

# statuses where the same request may well succeed later
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_SECRET_QUERY = re.compile(r"(?i)(access_token|corpsecret|secret|token|password|key)=([^&\s]+)")


class _RedactQuery(logging.Filter):
    """httpx logs request URLs, and some providers (WeCom) carry credentials in the query string."""

    def filter(self, record: logging.LogRecord) -> bool:
        with contextlib.suppress(TypeError, ValueError):  # a filter must never raise into httpx
            record.msg, record.args = redact(record.getMessage()), None
        return True


def _guard_httpx_log() -> None:
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactQuery) for f in logger.filters):
        logger.addFilter(_RedactQuery())


def make_client(base_url: str, *, timeout: float = 10.0, **kwargs: Any) -> httpx.AsyncClient:
    """One client per adapter for its whole life: kept-alive connections, bounded waits, no secrets in logs."""
    _guard_httpx_log()
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(timeout, connect=5.0),
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=50),
        **kwargs,
    )


def redact(text: str) -> str:
    """Hide credentials that travel in query strings (WeCom's access_token, for one)."""
    return _SECRET_QUERY.sub(lambda m: f"{m.group(1)}=***", text)


def truncate(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def retry_after_s(headers: httpx.Headers, now: datetime | None = None) -> float | None:
    """Retry-After as seconds, whether the provider sent seconds or an HTTP date."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def error_for_status(
    response: httpx.Response, *, provider: str, code: str | None = None, message: str | None = None
) -> DeliveryError:
    """A failed HTTP answer as a DeliveryError: 429/5xx/408 retryable (with Retry-After), other 4xx permanent."""
    status = response.status_code
    detail = message or truncate(response.text)
    return DeliveryError(
        redact(f"{provider} answered {status}: {detail}"),
        retryable=status in RETRYABLE_STATUS,
        code=code or f"http_{status}",
        retry_after=retry_after_s(response.headers),
        throttled=status == 429,
    )


def error_for_transport(exc: httpx.TransportError, *, provider: str) -> DeliveryError:
    """Timeouts, refused and dropped connections: the provider may be back soon."""
    kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection"
    return DeliveryError(redact(f"{provider} unreachable ({kind}): {exc!r}"), retryable=True, code=kind)
