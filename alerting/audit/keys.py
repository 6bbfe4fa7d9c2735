"""The keys the audit chain is signed with, and how a row names the key it was signed with.

A row's hash is HMAC-SHA-256 under a key that lives outside the database (JIAOYING_AUDIT_KEY). Whoever can write
the database but does not hold the key can still change a row, but cannot make its hash, or any hash after it,
fit again. A row names its key by a fingerprint (`AuditKey.id`), never the key: after a rotation the new key signs
and the earlier ones (JIAOYING_AUDIT_KEYS) still verify what they signed.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field

# long enough that guessing it from a row's hash is hopeless; `secrets.token_urlsafe(32)` gives 43 characters
MIN_KEY_LENGTH = 32
_FINGERPRINT = b"jiaoying audit key id"


class AuditKeyMissing(ValueError):
    """The audit cannot be signed: no key is configured. A ValueError, so every command says it in one line."""


@dataclass(frozen=True)
class AuditKey:
    # 16 hex characters from an HMAC of a constant: names the key in every row without revealing it
    id: str
    secret: bytes = field(repr=False)

    @classmethod
    def from_secret(cls, secret: str) -> AuditKey:
        raw = secret.encode()
        return cls(hmac.new(raw, _FINGERPRINT, hashlib.sha256).hexdigest()[:16], raw)

    def sign(self, message: str) -> str:
        return hmac.new(self.secret, message.encode(), hashlib.sha256).hexdigest()


def check_key(secret: str, name: str) -> None:
    """A key the chain may be signed with; raises ValueError naming the setting otherwise."""
    if len(secret) < MIN_KEY_LENGTH:
        raise ValueError(
            f"{name}: an audit key needs at least {MIN_KEY_LENGTH} characters (it has {len(secret)}); "
            'make one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'
        )


@dataclass(frozen=True)
class Keyring:
    """The key new rows are signed with (None: this process cannot sign) and every key a row may name."""

    signing: AuditKey | None = None
    earlier: tuple[AuditKey, ...] = ()

    @classmethod
    def from_secrets(cls, current: str | None, earlier: Iterable[str] = ()) -> Keyring:
        signing = AuditKey.from_secret(current) if current else None
        older = tuple(k for k in dict.fromkeys(AuditKey.from_secret(s) for s in earlier) if k != signing)
        return cls(signing, older)

    def find(self, key_id: str) -> AuditKey | None:
        return next((k for k in (self.signing, *self.earlier) if k is not None and k.id == key_id), None)

    def signer(self) -> AuditKey:
        if self.signing is None:
            raise AuditKeyMissing(
                "JIAOYING_AUDIT_KEY is not set: the audit cannot be signed, so nothing is written. Set it to a "
                f"secret of at least {MIN_KEY_LENGTH} characters kept outside the database, the same for every "
                "process of this county"
            )
        return self.signing
