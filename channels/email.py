"""Email over SMTP (aiosmtplib): the warning as a Chinese HTML mail with a big 收到 button, and a plain-text twin.

SMTP says nothing after the server queued the mail, so this channel never reports delivery or an
answer on its own: the recipient answers by opening the link, like everyone else. What it does say
precisely is whether a refusal is worth retrying: 4xx replies, dropped connections and timeouts
are; 5xx replies are not.

The Message-ID is derived from the delivery id, so a resend after a crash carries the same one and
mail servers and clients that dedup on it show the warning once.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from datetime import datetime
from email.headerregistry import Address as MailAddress
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, parseaddr

import aiosmtplib
import jinja2
import structlog
from markupsafe import Markup, escape

from alerting.answer.events import EventSink
from alerting.deliver.port import ChannelLimits, DeliveryError, OutboundMessage, Receipt, Webhook
from alerting.model.clock import SHANGHAI, Clock, SystemClock
from alerting.model.domain import ChannelKind, Level, Purpose

log = structlog.get_logger()

# Submission servers cap concurrent connections per account (often 5-10) and messages per second;
# a few connections kept open carry a county's duty list comfortably.
DEFAULT_LIMITS = ChannelLimits(concurrency=4, per_second=5.0, burst=10)

# A server's 4xx that asks us to slow down rather than reporting a fault; RFC 3463 puts policy
# refusals (rate limits, greylisting) under 4.7.x.
_THROTTLED = re.compile(r"\b4\.7\.\d+\b|rate|too many|throttl|slow down|greylist", re.IGNORECASE)
_WAIT = re.compile(r"(\d+)\s*(seconds?|secs?|s|minutes?|mins?|m)\b", re.IGNORECASE)
THROTTLE_DEFAULT_S = 60.0

LEVEL_COLOURS: Mapping[Level, tuple[str, str]] = {  # (background, text)
    Level.RED: ("#c00000", "#ffffff"),
    Level.ORANGE: ("#e36c09", "#ffffff"),
    Level.YELLOW: ("#f2c200", "#1a1a1a"),
    Level.BLUE: ("#1f5fbf", "#ffffff"),
}
LIFT_COLOURS = ("#2e7d32", "#ffffff")

_HTML = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(
    """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ subject }}</title></head>
<body style="margin:0;padding:0;background:#f2f2f2;font-family:'PingFang SC','Microsoft YaHei',sans-serif">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0"><tr><td align="center" style="padding:16px">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0"
 style="max-width:560px;background:#ffffff;border-radius:8px;overflow:hidden">
{% if exercise %}<tr><td style="background:#4d4d4d;color:#ffffff;padding:10px 16px;font-size:16px;font-weight:bold">
【演练】本邮件为应急演练，不是真实预警</td></tr>{% endif %}
<tr><td style="background:{{ background }};color:{{ foreground }};padding:16px;font-size:22px;font-weight:bold">
{{ headline }}</td></tr>
<tr><td style="padding:16px;font-size:16px;line-height:1.7;color:#1a1a1a">
<p style="margin:0 0 12px;font-weight:bold">{{ title }}</p>
<p style="margin:0">{{ text }}</p></td></tr>
{% if ack_url %}<tr><td align="center" style="padding:8px 16px 24px">
<a href="{{ ack_url }}" style="display:inline-block;background:#c00000;color:#ffffff;font-size:28px;font-weight:bold;
text-decoration:none;padding:16px 72px;border-radius:8px">收到</a>
<p style="margin:12px 0 0;font-size:13px;color:#666666">请点击“收到”回复。邮件送达或被打开都不算回复；
未回复将继续电话、短信通知并逐级上报。</p></td></tr>{% endif %}
<tr><td style="padding:12px 16px;font-size:12px;color:#888888;border-top:1px solid #eeeeee">
{% if issued %}发布时间：{{ issued }}（北京时间）<br>{% endif %}
{% if org %}{{ org }} · {% endif %}叫应系统自动发送，请勿直接回复本邮件。
</td></tr></table></td></tr></table></body></html>
"""
)


# ---- composing ----------------------------------------------------------------------------


def message_id(delivery_id: str, domain: str) -> str:
    """The same delivery always gets the same Message-ID: a resend is recognisably the same mail."""
    local = re.sub(r"[^A-Za-z0-9._-]", "-", delivery_id)
    return f"<jiaoying.{local}@{domain}>"


def subject_for(message: OutboundMessage) -> str:
    # The core marks exercises in the title already; a subject must never lose the mark.
    if message.exercise and "演练" not in message.title:
        return f"【演练】{message.title}"
    return message.title


def _headline(message: OutboundMessage) -> str:
    warning = f"{message.level.label}{message.hazard}预警"
    if message.purpose is Purpose.LIFT:
        return f"{warning}已解除"
    if message.purpose is Purpose.TASK:
        return f"人工任务：{message.task.value if message.task else '人工通知'}（{warning}）"
    if message.about is not None:
        return f"{warning} · 叫应升级"
    return warning


def _ack_link(message: OutboundMessage) -> str | None:
    # A lift asks nothing of anyone: no link, even if one was composed.
    return None if message.purpose is Purpose.LIFT else message.ack_url


def _escaped(text: str) -> Markup:
    return Markup("<br>").join(escape(line) for line in text.split("\n"))


def _linked(text: str, url: str | None) -> Markup:
    """The text, escaped, its line breaks kept, and the answer link inside it made clickable."""
    if not url or url not in text:
        return _escaped(text)
    link = Markup('<a href="{0}" style="color:#c00000">{0}</a>').format(url)
    return link.join(_escaped(part) for part in text.split(url))


def render_html(message: OutboundMessage, *, org: str = "") -> str:
    background, foreground = LIFT_COLOURS if message.purpose is Purpose.LIFT else LEVEL_COLOURS[message.level]
    ack_url = _ack_link(message)
    issued = message.issued_at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M") if message.issued_at else None
    return _HTML.render(
        subject=subject_for(message),
        exercise=message.exercise,
        headline=_headline(message),
        background=background,
        foreground=foreground,
        title=message.title,
        text=_linked(message.text, ack_url),
        ack_url=ack_url,
        issued=issued,
        org=org,
    )


def render_text(message: OutboundMessage) -> str:
    lines = [message.text]
    ack_url = _ack_link(message)
    if ack_url and ack_url not in message.text:
        lines.append(f"请打开链接回复“收到”：{ack_url}")
    if ack_url:
        lines.append("（邮件送达或被打开都不算回复，请务必点击链接回复。）")
    return "\n\n".join(lines) + "\n"


def build_email(message: OutboundMessage, *, sender: MailAddress, to: str, sent_at: datetime) -> EmailMessage:
    """multipart/alternative: the plain text first, the HTML last (mail clients show the last they can)."""
    mail = EmailMessage(policy=SMTP_POLICY)
    mail["Subject"] = subject_for(message)
    mail["From"] = sender
    mail["To"] = to
    mail["Date"] = format_datetime(sent_at)
    mail["Message-ID"] = message_id(message.delivery_id, sender.domain)
    # RFC 3834: no out-of-office replies to a warning robot.
    mail["Auto-Submitted"] = "auto-generated"
    if message.purpose is Purpose.WARN and message.level in (Level.RED, Level.ORANGE):
        mail["Importance"] = "high"
        mail["X-Priority"] = "1"
    if message.exercise:
        mail["X-Jiaoying-Exercise"] = "yes"
    mail.set_content(render_text(message))
    mail.add_alternative(render_html(message, org=sender.display_name), subtype="html")
    return mail


def parse_sender(sender: str) -> MailAddress:
    """'巫溪县应急管理局 <yj@example.gov.cn>' or a bare address."""
    name, addr = parseaddr(sender)
    username, at, domain = addr.rpartition("@")
    if not at or not username or not domain:
        raise ValueError(f"not an email address for the sender: {sender!r}")
    return MailAddress(display_name=name, username=username, domain=domain)


def mask_email(addr: str) -> str:
    """g1worker@example.org -> g***@example.org: which mailbox, without handing out the address."""
    local, at, domain = addr.partition("@")
    return f"{local[:1]}***{at}{domain}" if at else "***"


# ---- failures -----------------------------------------------------------------------------


def throttle_delay(code: int, text: str) -> float | None:
    """Seconds to wait when a 4xx asks us to slow down (its own figure if it gives one); None for other replies."""
    if not 400 <= code < 500 or not _THROTTLED.search(text):
        return None
    wait = _WAIT.search(_THROTTLED.sub("", text))  # not the 4.7.1 of the status code
    if wait is None:
        return THROTTLE_DEFAULT_S
    amount, unit = float(wait.group(1)), wait.group(2).lower()
    return amount * 60 if unit.startswith("m") else amount


def error_for_reply(code: int, text: str) -> DeliveryError:
    """A refusal by code: 4xx may pass later, 5xx will not; the code survives as smtp_<code>."""
    return DeliveryError(
        f"SMTP server answered {code}: {text[:300]}",
        retryable=400 <= code < 500,
        code=f"smtp_{code}",
        retry_after=throttle_delay(code, text),
        throttled=400 <= code < 500 and bool(_THROTTLED.search(text)),
    )


def error_for_smtp(exc: Exception) -> DeliveryError:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        # One recipient per mail: its refusal is the answer.
        first = exc.recipients[0] if exc.recipients else None
        if first is None:
            return DeliveryError("SMTP server refused the recipient", retryable=False, code="smtp_refused")
        return error_for_reply(first.code, first.message)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return error_for_reply(exc.code, exc.message)
    if isinstance(exc, aiosmtplib.SMTPNotSupported) or type(exc) is aiosmtplib.SMTPException:
        # aiosmtplib's bare SMTPException is a mismatch of settings and server (no STARTTLS, no AUTH
        # offered): nothing a retry changes until someone fixes the configuration.
        return DeliveryError(f"SMTP server lacks what we need: {exc}", retryable=False, code="smtp_unsupported")
    if isinstance(exc, ssl.SSLCertVerificationError):
        # The server is not who it says, or its certificate lapsed: a person has to look, not a retry.
        return DeliveryError(f"SMTP server certificate refused: {exc}", retryable=False, code="tls_certificate")
    if isinstance(exc, TimeoutError):
        return DeliveryError(f"SMTP timed out: {exc}", retryable=True, code="timeout")
    if isinstance(exc, aiosmtplib.SMTPException | OSError):
        return DeliveryError(f"SMTP connection failed: {exc!r}", retryable=True, code="connection")
    return DeliveryError(f"SMTP failed: {exc!r}", retryable=True, code="smtp_error")


# ---- connections --------------------------------------------------------------------------


class _Connections:
    """A few SMTP sessions kept open between sends: a wave of mails need not pay TLS and AUTH each time."""

    def __init__(self, open_session: Callable[[], Awaitable[aiosmtplib.SMTP]], size: int, max_idle_s: float) -> None:
        self._open = open_session
        self._slots = asyncio.Semaphore(size)
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []
        self._max_idle_s = max_idle_s

    @asynccontextmanager
    async def session(self) -> AsyncIterator[aiosmtplib.SMTP]:
        async with self._slots:
            smtp = self._reusable() or await self._open()
            try:
                yield smtp
            except BaseException:
                # Whatever state the session is in now, a fresh one is cheaper than finding out.
                smtp.close()
                raise
            self._idle.append((smtp, asyncio.get_running_loop().time()))

    def _reusable(self) -> aiosmtplib.SMTP | None:
        now = asyncio.get_running_loop().time()
        while self._idle:
            smtp, since = self._idle.pop()
            # Servers hang up on idle sessions (RFC 5321 allows after 5 minutes); stay well inside that.
            if smtp.is_connected and now - since < self._max_idle_s:
                return smtp
            smtp.close()
        return None

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for smtp, _ in idle:
            with suppress(Exception):
                await smtp.quit(timeout=2.0)
            smtp.close()


# ---- the channel --------------------------------------------------------------------------


class EmailChannel:
    """The Channel for EMAIL deliveries, through one SMTP submission server."""

    kind = ChannelKind.EMAIL
    provider = "smtp"
    sandbox = False
    webhooks: tuple[Webhook, ...] = ()  # SMTP has no delivery callback

    def __init__(
        self,
        host: str,
        port: int = 587,
        *,
        username: str | None = None,
        password: str | None = None,
        sender: str,
        starttls: bool = True,
        use_tls: bool = False,
        limits: ChannelLimits = DEFAULT_LIMITS,
        timeout: float = 30.0,
        tls_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
        clock: Clock | None = None,
        max_idle_s: float = 30.0,
    ) -> None:
        if use_tls and starttls:
            # Implicit TLS (465) is already encrypted; STARTTLS (587) upgrades a plain session.
            starttls = False
        self.host, self.port = host, port
        self.sender = parse_sender(sender)
        self.limits = limits
        self._username, self._password = username, password
        self._starttls, self._use_tls = starttls, use_tls
        self._timeout = timeout
        self._tls_context = tls_context
        self._local_hostname = local_hostname
        self._clock: Clock = clock or SystemClock()
        self._connections = _Connections(self.connect, limits.concurrency, max_idle_s)
        self._log = log.bind(channel="email", provider="smtp", server=f"{host}:{port}")

    async def start(self, events: EventSink) -> None:
        # Nothing comes back over SMTP; only load the CA bundle now, off the event loop, once.
        await self._tls()
        self._log.info("email.ready", tls="implicit" if self._use_tls else "starttls" if self._starttls else "none")

    async def _tls(self) -> ssl.SSLContext | None:
        if self._tls_context is None and (self._use_tls or self._starttls):
            self._tls_context = await asyncio.to_thread(ssl.create_default_context)
        return self._tls_context

    async def connect(self) -> aiosmtplib.SMTP:
        """A new session: connected, encrypted as configured, logged in."""
        smtp = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=self._username,
            password=self._password,
            use_tls=self._use_tls,
            start_tls=self._starttls,
            timeout=self._timeout,
            tls_context=await self._tls(),
            local_hostname=self._local_hostname,
        )
        await smtp.connect()
        return smtp

    async def send(self, message: OutboundMessage) -> Receipt:
        to = message.address.email
        if not to or "@" not in to:
            raise DeliveryError(
                f"no email address for {message.address.person_id}", retryable=False, code="bad_address"
            )
        mail = build_email(message, sender=self.sender, to=to, sent_at=self._clock.now())
        mid = str(mail["Message-ID"])
        try:
            async with self._connections.session() as smtp:
                _, response = await smtp.send_message(mail, sender=self.sender.addr_spec, recipients=[to])
        except (aiosmtplib.SMTPException, OSError) as exc:
            error = error_for_smtp(exc)
            self._log.warning(
                "email.refused",
                delivery_id=message.delivery_id,
                alert_id=message.alert_id,
                to=mask_email(to),
                code=error.code,
                retryable=error.retryable,
            )
            raise error from exc
        except ValueError as exc:
            # After OSError: a certificate failure is both. aiosmtplib refuses addresses it cannot send safely.
            raise DeliveryError(f"unusable email address: {exc}", retryable=False, code="bad_address") from exc
        self._log.info(
            "email.sent", delivery_id=message.delivery_id, alert_id=message.alert_id, to=mask_email(to), message_id=mid
        )
        return Receipt(provider=self.provider, provider_id=mid, detail={"response": response[:300]})

    async def close(self) -> None:
        await self._connections.close()
