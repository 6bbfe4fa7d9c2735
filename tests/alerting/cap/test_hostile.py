"""Hostile XML is refused before anything in it resolves: no file it names is opened, no connection is made.

Two witnesses would see it if it happened: a Python audit hook recording every file opened and every socket
connected while a document is read, and an HTTP server on 127.0.0.1 counting requests. A control reads the
same documents with a parser that does resolve external entities, and both witnesses see it.
"""

from __future__ import annotations

import io
import sys
import threading
import xml.sax
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from alerting.cap.errors import CapRefused
from alerting.cap.parse import parse

CORPUS = Path(__file__).parent / "corpus" / "hostile"
_seen: list[tuple[str, str]] = []
_watching = threading.Event()


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if _watching.is_set() and event in ("open", "socket.connect", "urllib.Request"):
        _seen.append((event, repr(args[:2])))


sys.addaudithook(_hook)  # audit hooks cannot be removed; it records only while a test watches


class Witness:
    def __init__(self, secret: Path, port: int, hits: list[str]) -> None:
        self.secret, self.port, self.hits = secret, port, hits

    def document(self, name: str) -> bytes:
        text = (CORPUS / name).read_text(encoding="utf-8")
        return text.replace("{SECRET}", str(self.secret)).replace("{PORT}", str(self.port)).encode("utf-8")

    def read(self, data: bytes, how: Any) -> list[tuple[str, str]]:
        """What reading the document with `how` touched: files named by it, connections to the port."""
        _seen.clear()
        _watching.set()
        try:
            how(data)
        finally:
            _watching.clear()
        return [(event, args) for event, args in _seen if str(self.secret) in args or f"{self.port}" in args]


@pytest.fixture
def witness(tmp_path: Path) -> Iterator[Witness]:
    secret = tmp_path / "secret.txt"
    secret.write_text("口令：不可外泄", encoding="utf-8")
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            body = b'<!ENTITY leak "x">' if self.path.endswith(".dtd") else b"x"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Witness(secret, server.server_address[1], hits)
    finally:
        server.shutdown()
        server.server_close()


HOSTILE = [
    "internal_entity.xml",
    "billion_laughs.xml",
    "external_dtd_file.xml",
    "external_dtd_http.xml",
    "external_entity_file.xml",
    "external_entity_http.xml",
    "parameter_entity_http.xml",
    "xinclude_file.xml",
    "xinclude_http.xml",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_document_is_refused_before_anything_resolves(witness: Witness, name: str) -> None:
    data = witness.document(name)
    refusals: list[CapRefused] = []

    def read(d: bytes) -> None:
        with pytest.raises(CapRefused) as caught:
            parse(d)
        refusals.append(caught.value)

    touched = witness.read(data, read)
    assert touched == []
    assert witness.hits == []
    (refused,) = refusals
    assert refused.slug == "cap-hostile-xml" and refused.status == 400
    assert any(word in refused.message for word in ("DTD", "entity", "XInclude"))


def test_a_schema_location_hint_is_not_followed(witness: Witness) -> None:
    data = witness.document("schema_location_hint.xml")
    messages: list[str] = []
    touched = witness.read(data, lambda d: messages.append(parse(d).identifier))
    assert touched == [] and witness.hits == []
    assert messages == ["50023841600000_20260704083000_0"]  # otherwise a valid message: taken, the hint ignored


@pytest.mark.parametrize("name", ["external_entity_file.xml", "external_entity_http.xml"])
def test_the_witnesses_see_a_parser_that_resolves(witness: Witness, name: str) -> None:
    """The control: a SAX parser with external entities switched on reads the file or calls the port."""

    def unsafe(d: bytes) -> None:
        parser = xml.sax.make_parser()  # noqa: S317  (the unsafe parser on purpose: the witnesses must see it)
        parser.setFeature(xml.sax.handler.feature_external_ges, True)
        parser.setContentHandler(xml.sax.ContentHandler())
        source = xml.sax.xmlreader.InputSource()
        source.setByteStream(io.BytesIO(d))
        parser.parse(source)

    touched = witness.read(witness.document(name), unsafe)
    if name.endswith("_file.xml"):
        assert any(event == "open" for event, _ in touched)
    else:
        assert any(event == "socket.connect" for event, _ in touched)
        assert witness.hits == ["/entity"]


def test_an_oversized_message_is_refused_unread() -> None:
    with pytest.raises(CapRefused) as caught:
        parse(b"<alert>" + b" " * (600 * 1024) + b"</alert>")
    assert caught.value.status == 413
