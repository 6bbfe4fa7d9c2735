"""A real SMTP server on a loopback port (aiosmtpd), recording what it was handed.

It speaks plain SMTP, STARTTLS or implicit TLS with a self-signed certificate made for the test,
can demand AUTH, and can answer the next RCPT or DATA with any reply ("450 4.2.1 ...", "550 ...").
aiosmtpd runs its own event loop in a thread; the test talks to it over the network only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import threading
from collections import deque
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.fakes.server import free_port

Stage = Literal["RCPT", "DATA"]
Tls = Literal["none", "starttls", "implicit"]


@dataclass(frozen=True)
class Certificate:
    certfile: Path
    keyfile: Path
    pem: str

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this certificate only, with full hostname checking."""
        return ssl.create_default_context(cadata=self.pem)

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certfile, self.keyfile)
        return context


def self_signed_certificate(directory: Path) -> Certificate:
    """A certificate for 127.0.0.1 and localhost, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jiaoying test smtp")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    certfile, keyfile = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    certfile.write_text(pem)
    keyfile.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return Certificate(certfile, keyfile, pem)


@dataclass(frozen=True)
class Received:
    """One mail the server accepted, as it came off the wire."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    tls: bool
    login: str | None
    peer: tuple[str, int]  # the client's end of the connection: the same for mails sent over one session

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.content, policy=default_policy)
        assert isinstance(parsed, EmailMessage)
        return parsed

    def part(self, content_type: str) -> str:
        for part in self.message.walk():
            if part.get_content_type() == content_type:
                return str(part.get_content())
        raise AssertionError(f"no {content_type} part in the mail")


class _Handler:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self._answers: dict[Stage, deque[str]] = {"RCPT": deque(), "DATA": deque()}
        self._lock = threading.Lock()  # levers are pulled from the test's thread, read in the server's

    def answer_next(self, stage: Stage, reply: str) -> None:
        with self._lock:
            self._answers[stage].append(reply)

    def _next(self, stage: Stage) -> str | None:
        with self._lock:
            return self._answers[stage].popleft() if self._answers[stage] else None

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        reply = self._next("RCPT")
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = self._next("DATA")
        if reply is not None:
            return reply
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        with self._lock:
            self.received.append(
                Received(
                    mail_from=envelope.mail_from,
                    rcpt_tos=tuple(envelope.rcpt_tos),
                    content=envelope.original_content or envelope.content,
                    # session.ssl is set by STARTTLS only; with implicit TLS the transport itself is encrypted
                    tls=session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None,
                    login=login,
                    peer=tuple(session.peer),
                )
            )
            queued = len(self.received)
        return f"250 2.0.0 Ok: queued as Q{queued:05d}"


class FakeSmtpServer:
    """`async with FakeSmtpServer(...) as smtp:` a server on smtp.port until the block ends."""

    host = "127.0.0.1"

    def __init__(
        self, *, tls: Tls = "none", certificate: Certificate | None = None, users: dict[str, str] | None = None
    ) -> None:
        if tls != "none" and certificate is None:
            raise ValueError("a TLS server needs a certificate")
        self.tls = tls
        self.certificate = certificate
        self.users = users
        self.port = free_port()
        self._handler = _Handler()
        self._controller: Controller | None = None

    @property
    def received(self) -> list[Received]:
        return list(self._handler.received)

    def answer_next(self, stage: Stage, reply: str) -> None:
        """Answer the next RCPT or DATA with this reply instead of accepting."""
        self._handler.answer_next(stage, reply)

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        users = self.users or {}
        ok = isinstance(auth_data, LoginPassword) and users.get(auth_data.login.decode()) == auth_data.password.decode()
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    def _controller_for(self) -> Controller:
        kwargs: dict[str, Any] = {"hostname": self.host, "port": self.port, "server_hostname": "smtp.test"}
        if self.users is not None:
            kwargs |= {
                "authenticator": self._authenticate,
                "auth_required": True,
                # plain-text AUTH is only for this test; aiosmtpd counts STARTTLS, not implicit TLS, as TLS
                "auth_require_tls": self.tls == "starttls",
            }
        if self.tls == "starttls":
            assert self.certificate is not None
            kwargs |= {"tls_context": self.certificate.server_context(), "require_starttls": True}
        elif self.tls == "implicit":
            assert self.certificate is not None
            kwargs["ssl_context"] = self.certificate.server_context()
        return Controller(self._handler, **kwargs)

    async def __aenter__(self) -> FakeSmtpServer:
        self._controller = self._controller_for()
        await asyncio.to_thread(self._controller.start)  # waits for the server thread to accept
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._controller is not None:
            await asyncio.to_thread(self._controller.stop)
            self._controller = None
