"""A local WeCom server: gettoken and message/send as qyapi.weixin.qq.com answers them, and the callbacks it sends.

It checks what the real one checks (corpid/corpsecret, the access token, the agent id, the member, the
shape of the message), records every message it accepted, and has levers: expire the token, refuse
template cards the way a server without them does, and fail the next send with a real errcode or an
HTTP status.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from alerting.deliver.port import WebhookRequest
from channels.wecom.crypto import WeComCrypto, cdata

CORP_ID = "ww1436e0e65a779aee"
SECRET = "fake-app-secret-0123456789"
AGENT_ID = 1000002
TOKEN = "fakeCallbackToken"
AES_KEY = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt"  # 43 characters, as WeCom issues them

Lever = Literal["busy", "freq", "invalid_user", "invaliduser_ok", "unsupported_card", "http_503", "http_429"]

_ERRORS: dict[str, tuple[int, str]] = {
    "busy": (-1, "system busy"),
    "freq": (45009, "api freq out of limit"),
    "invalid_user": (60111, "invalid string value `wx8`. userid not found"),
    "unsupported_card": (40008, "invalid message type"),
}


@dataclass
class FakeWeCom:
    corp_id: str = CORP_ID
    secret: str = SECRET
    agent_id: int = AGENT_ID
    token: str = TOKEN
    aes_key: str = AES_KEY
    members: set[str] = field(default_factory=lambda: {"wx8", "wx9", "zhangsan"})
    expires_in: int = 7200
    supports_template_card: bool = True
    gettoken_calls: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)  # every message/send body it accepted
    refused: list[dict[str, Any]] = field(default_factory=list)  # bodies it answered with errcode != 0
    raw_bodies: list[bytes] = field(default_factory=list)
    _tokens: dict[str, float] = field(default_factory=dict)  # access_token -> monotonic expiry
    _next: list[Lever] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.crypto = WeComCrypto(self.token, self.aes_key, self.corp_id)
        self.app = self._build()

    # ---- levers --------------------------------------------------------------------

    def fail_next(self, how: Lever) -> None:
        self._next.append(how)

    def expire_tokens(self) -> None:
        """Every token issued so far now answers 42001, as after its 7200 s are up."""
        for token in self._tokens:
            self._tokens[token] = 0.0

    def cards(self, msgtype: str = "template_card") -> list[dict[str, Any]]:
        return [body[msgtype] for body in self.sent if body.get("msgtype") == msgtype]

    # ---- the callbacks WeCom sends -------------------------------------------------

    def url_check(self, echo: str = "1288432023552776189", *, forged: bool = False) -> dict[str, str]:
        """The query of the GET WeCom sends when an admin saves the callback URL."""
        timestamp, nonce = str(int(time.time())), secrets.token_hex(5)
        sealed = self.crypto.seal(echo, timestamp=timestamp, nonce=nonce)
        signature = ("0" * 40) if forged else sealed.signature
        return {"msg_signature": signature, "timestamp": timestamp, "nonce": nonce, "echostr": sealed.encrypted}

    def button_click(
        self,
        delivery_id: str,
        userid: str = "wx8",
        *,
        key: str = "ack",
        forged: bool = False,
        receive_id: str | None = None,
        create_time: int | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """Query and body of the POST WeCom sends when a member presses a button on our card.

        forged: signed with the wrong token; receive_id: encrypted for another corp (correctly signed).
        """
        created = create_time if create_time is not None else int(time.time())
        plain = (
            f"<xml><ToUserName>{cdata(self.corp_id)}</ToUserName><FromUserName>{cdata(userid)}</FromUserName>"
            f"<CreateTime>{created}</CreateTime><MsgType>{cdata('event')}</MsgType>"
            f"<Event>{cdata('template_card_event')}</Event><EventKey>{cdata(f'{key}:{delivery_id}')}</EventKey>"
            f"<TaskId>{cdata(f'jy-{delivery_id}-1')}</TaskId><CardType>{cdata('button_interaction')}</CardType>"
            f"<ResponseCode>{cdata(secrets.token_hex(16))}</ResponseCode><AgentID>{self.agent_id}</AgentID></xml>"
        )
        crypto = WeComCrypto(self.token, self.aes_key, receive_id) if receive_id else self.crypto
        timestamp, nonce = str(created), secrets.token_hex(5)
        sealed = crypto.seal(plain, timestamp=timestamp, nonce=nonce)
        signature = sealed.signature
        if forged:
            signature = WeComCrypto("not-the-token", self.aes_key, self.corp_id).sign(
                timestamp, nonce, sealed.encrypted
            )
        body = (
            f"<xml><ToUserName>{cdata(self.corp_id)}</ToUserName><Encrypt>{cdata(sealed.encrypted)}</Encrypt>"
            f"<AgentID>{cdata(str(self.agent_id))}</AgentID></xml>"
        )
        return {"msg_signature": signature, "timestamp": timestamp, "nonce": nonce}, body.encode()

    @staticmethod
    def webhook_request(
        method: str, query: dict[str, str], body: bytes = b"", public_url: str = "https://jy.example.test"
    ) -> WebhookRequest:
        """The callback as the core hands it to the adapter."""
        return WebhookRequest(
            method=method,
            url=f"{public_url}/webhooks/wecom/?{urlencode(query)}",
            path="/",
            headers={"content-type": "text/xml"} if body else {},
            query=query,
            form={},
            body=body,
        )

    # ---- the server ----------------------------------------------------------------

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.get("/cgi-bin/gettoken")
        async def gettoken(corpid: str = "", corpsecret: str = "") -> JSONResponse:
            self.gettoken_calls += 1
            if corpid != self.corp_id:
                return JSONResponse({"errcode": 40013, "errmsg": "invalid corpid"})
            if corpsecret != self.secret:
                return JSONResponse({"errcode": 40001, "errmsg": "invalid credential"})
            token = secrets.token_urlsafe(48)
            self._tokens[token] = time.monotonic() + self.expires_in
            return JSONResponse({"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": self.expires_in})

        @app.post("/cgi-bin/message/send")
        async def send(request: Request, access_token: str = "") -> Response:
            raw = await request.body()
            self.raw_bodies.append(raw)
            expiry = self._tokens.get(access_token)
            if expiry is None:
                return JSONResponse({"errcode": 40014, "errmsg": "invalid access_token"})
            if expiry <= time.monotonic():
                return JSONResponse({"errcode": 42001, "errmsg": "access_token expired"})
            if self._next:
                how = self._next.pop(0)
                if how == "http_503":
                    return Response("service unavailable", status_code=503)
                if how == "http_429":
                    return Response("too many requests", status_code=429, headers={"Retry-After": "7"})
                if how != "invaliduser_ok":
                    errcode, errmsg = _ERRORS[how]
                    return self._refuse(json.loads(raw), errcode, errmsg)
                body = json.loads(raw)
                self.sent.append(body)
                return JSONResponse({"errcode": 0, "errmsg": "ok", "invaliduser": body.get("touser", "")})
            if b"\\u" in raw:
                return JSONResponse({"errcode": 40033, "errmsg": "invalid charset. please check your request"})
            try:
                body = json.loads(raw)
            except ValueError:
                return JSONResponse({"errcode": 47001, "errmsg": "data format error"})
            return self._accept(body)

        return app

    def _refuse(self, body: dict[str, Any], errcode: int, errmsg: str) -> JSONResponse:
        self.refused.append(body)
        answer: dict[str, Any] = {"errcode": errcode, "errmsg": errmsg}
        if errcode in (60111, 81013):
            answer["invaliduser"] = str(body.get("touser", "")).lower()
        return JSONResponse(answer)

    def _accept(self, body: dict[str, Any]) -> JSONResponse:
        if body.get("agentid") != self.agent_id:
            return self._refuse(body, 40056, "invalid agentid")
        if body.get("touser") not in self.members:
            return self._refuse(body, 81013, "user & party & tag all invalid")
        msgtype = body.get("msgtype")
        if msgtype == "template_card" and not self.supports_template_card:
            return self._refuse(body, 40008, "invalid message type")
        problem = _check_shape(msgtype, body.get(str(msgtype)))
        if problem:
            return self._refuse(body, 40058, problem)
        self.sent.append(body)
        answer: dict[str, Any] = {"errcode": 0, "errmsg": "ok", "msgid": secrets.token_urlsafe(24)}
        if msgtype == "template_card":
            answer["response_code"] = secrets.token_urlsafe(24)
        return JSONResponse(answer)


def _check_shape(msgtype: Any, content: Any) -> str | None:
    """What the real server refuses with 40058 (invalid parameter) and friends, for the types we send."""
    if not isinstance(content, dict):
        return f"missing {msgtype}"
    if msgtype == "text":
        return None if content.get("content") else "missing content"
    if msgtype == "textcard":
        for key in ("title", "description", "url"):
            if not content.get(key):
                return f"missing textcard.{key}"
        if len(str(content["title"]).encode()) > 128 or len(str(content["description"]).encode()) > 512:
            return "textcard too long"
        return None
    if msgtype == "template_card":
        if content.get("card_type") != "button_interaction":
            return "unexpected card_type"
        task = str(content.get("task_id", ""))
        if not task or len(task) > 128 or not all(c.isalnum() or c in "_-@" for c in task):
            return "invalid task_id"
        if not (content.get("main_title") or {}).get("title"):
            return "missing main_title.title"
        buttons = content.get("button_list") or []
        keys = [b.get("key") for b in buttons]
        if not 1 <= len(buttons) <= 6 or not all(keys) or len(set(keys)) != len(keys):
            return "invalid button_list"
        return None
    return f"unexpected msgtype {msgtype}"
