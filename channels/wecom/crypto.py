"""WeCom's callback encryption (the scheme of Tencent's WXBizMsgCrypt), written on `cryptography`.

- msg_signature = sha1 of the sorted, concatenated [token, timestamp, nonce, encrypted text], hex.
- AES key = base64decode(EncodingAESKey + "="), 32 bytes; AES-256-CBC with IV = key[:16].
- Plaintext = 16 random bytes + 4-byte big-endian length + message + receive id (the corp id),
  padded PKCS#7 to a multiple of 32 bytes (not AES's 16), then base64.

The receive id is checked on every decrypt: a message encrypted for another corp is refused even
when the key happens to match.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK = 32  # WeCom pads to 32 bytes, twice the AES block
MAX_XML_BYTES = 256 * 1024  # callbacks are a few hundred bytes; anything this big is not WeCom


class WeComCryptoError(ValueError):
    """A callback that fails the signature, will not decrypt, or was encrypted for someone else."""


def signature(token: str, timestamp: str, nonce: str, encrypted: str) -> str:
    return hashlib.sha1("".join(sorted((token, timestamp, nonce, encrypted))).encode()).hexdigest()  # noqa: S324 (WeCom's protocol)


def parse_xml(text: str | bytes) -> ET.Element:
    """Parse a WeCom XML packet. Documents with a DTD are refused before parsing: WeCom never sends one."""
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) > MAX_XML_BYTES or b"<!DOCTYPE" in raw.upper() or b"<!ENTITY" in raw.upper():
        raise WeComCryptoError("not a WeCom XML packet")
    try:
        return ET.fromstring(raw)  # noqa: S314 (no DTD can reach here, and expat >= 2.4 caps entity expansion)
    except ET.ParseError as exc:
        raise WeComCryptoError(f"malformed XML: {exc}") from exc


def xml_text(root: ET.Element, tag: str) -> str | None:
    node = root.find(tag)
    return None if node is None or node.text is None else node.text.strip()


def cdata(value: str) -> str:
    # a literal "]]>" would end the section early; split it across two sections
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


@dataclass(frozen=True)
class Sealed:
    """An encrypted, signed packet: what goes in an XML envelope or a callback query."""

    encrypted: str
    signature: str
    timestamp: str
    nonce: str

    def envelope(self) -> str:
        """The XML a passive reply is sent back in."""
        return (
            f"<xml><Encrypt>{cdata(self.encrypted)}</Encrypt><MsgSignature>{cdata(self.signature)}</MsgSignature>"
            f"<TimeStamp>{self.timestamp}</TimeStamp><Nonce>{cdata(self.nonce)}</Nonce></xml>"
        )


class WeComCrypto:
    """Signs, verifies, encrypts and decrypts for one WeCom app's callback (Token + EncodingAESKey + corp id)."""

    def __init__(self, token: str, encoding_aes_key: str, receive_id: str) -> None:
        if len(encoding_aes_key) != 43:
            raise ValueError("the WeCom EncodingAESKey is 43 characters")
        try:
            key = base64.b64decode(encoding_aes_key + "=", validate=True)
        except binascii.Error as exc:
            raise ValueError("the WeCom EncodingAESKey is not base64") from exc
        self._token = token
        self._key = key
        self.receive_id = receive_id

    def sign(self, timestamp: str, nonce: str, encrypted: str) -> str:
        return signature(self._token, timestamp, nonce, encrypted)

    def verify(self, msg_signature: str, timestamp: str, nonce: str, encrypted: str) -> bool:
        return hmac.compare_digest(self.sign(timestamp, nonce, encrypted), msg_signature.lower())

    def encrypt(self, message: str, *, random_prefix: bytes | None = None) -> str:
        prefix = random_prefix if random_prefix is not None else os.urandom(16)
        if len(prefix) != 16:
            raise ValueError("the random prefix is 16 bytes")
        body = message.encode()
        plain = prefix + struct.pack(">I", len(body)) + body + self.receive_id.encode()
        pad = BLOCK - len(plain) % BLOCK
        plain += bytes([pad]) * pad
        encryptor = self._cipher().encryptor()
        return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()

    def decrypt(self, encrypted: str) -> str:
        """The message inside, once the padding, the length and the receive id check out."""
        try:
            data = base64.b64decode(encrypted, validate=True)
        except binascii.Error as exc:
            raise WeComCryptoError("the encrypted text is not base64") from exc
        if not data or len(data) % 16:
            raise WeComCryptoError("the encrypted text is not whole AES blocks")
        decryptor = self._cipher().decryptor()
        plain = decryptor.update(data) + decryptor.finalize()
        pad = plain[-1]
        if not 1 <= pad <= BLOCK or plain[-pad:] != bytes([pad]) * pad:
            raise WeComCryptoError("bad padding")
        plain = plain[:-pad]
        if len(plain) < 20:
            raise WeComCryptoError("too short")
        (length,) = struct.unpack(">I", plain[16:20])
        if 20 + length > len(plain):
            raise WeComCryptoError("the length field runs past the end")
        receive_id = plain[20 + length :].decode(errors="replace")
        if not hmac.compare_digest(receive_id.encode(), self.receive_id.encode()):
            raise WeComCryptoError("encrypted for another corp (receive id does not match)")
        try:
            return plain[20 : 20 + length].decode()
        except UnicodeDecodeError as exc:
            raise WeComCryptoError("the message is not UTF-8") from exc

    def open(self, msg_signature: str, timestamp: str, nonce: str, encrypted: str) -> str:
        """Verify, then decrypt. Raises WeComCryptoError on either failure."""
        if not self.verify(msg_signature, timestamp, nonce, encrypted):
            raise WeComCryptoError("msg_signature does not match")
        return self.decrypt(encrypted)

    def seal(self, message: str, *, timestamp: str, nonce: str, random_prefix: bytes | None = None) -> Sealed:
        encrypted = self.encrypt(message, random_prefix=random_prefix)
        return Sealed(encrypted, self.sign(timestamp, nonce, encrypted), timestamp, nonce)

    def _cipher(self) -> Cipher[modes.CBC]:
        return Cipher(algorithms.AES(self._key), modes.CBC(self._key[:16]))
