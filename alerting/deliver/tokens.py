"""Signed, expiring answer tokens. One per delivery: the delivery says which alert, target and contact.

Compact on purpose (43 characters) because the link travels in an SMS: 16 bytes of delivery id,
4 bytes of expiry, 12 bytes of HMAC-SHA256, base64url without padding.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


class TokenError(Exception):
    """The link is malformed, was tampered with, or has expired. The message says which, plainly."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


@dataclass(frozen=True)
class TokenSigner:
    secret: bytes
    ttl: timedelta = timedelta(hours=72)

    def sign(self, delivery_id: str, now: datetime) -> str:
        expiry = int((now + self.ttl).timestamp())
        payload = bytes.fromhex(delivery_id) + struct.pack(">I", expiry)
        return base64.urlsafe_b64encode(payload + self._mac(payload)).rstrip(b"=").decode()

    def verify(self, token: str, now: datetime) -> str:
        """The delivery id the token was made for; raises TokenError otherwise."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except ValueError as exc:
            raise TokenError("链接不完整或已损坏 (the link is malformed)") from exc
        # 43 characters carry 258 bits for 256: the last one has two spare bits that decoding ignores.
        # Only the one spelling we issue is accepted, so a changed character never reads as the same link.
        if len(raw) != 32 or base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != token:
            raise TokenError("链接不完整或已损坏 (the link is malformed)")
        payload, mac = raw[:20], raw[20:]
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise TokenError("链接无效，可能被改动过 (the link is not valid)")
        (expiry,) = struct.unpack(">I", payload[16:])
        if now.astimezone(UTC).timestamp() > expiry:
            raise TokenError("链接已过期 (the link has expired)", expired=True)
        return payload[:16].hex()

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self.secret, b"ack:" + payload, hashlib.sha256).digest()[:12]
