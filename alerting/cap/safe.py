"""Reading a CAP document without resolving anything in it.

A DTD, an entity declaration or an external reference is refused by defusedxml the moment the parser meets it,
before a byte of what it points at is read: no file is opened and no connection is made (the hostile corpus in
tests/alerting/cap/corpus/ proves it with a test that would see either). XInclude is never processed by the
parser; a document that asks for it is refused as well, so nothing further down ever could.
"""

from __future__ import annotations

import codecs
import re
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as safe_tree
from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden

from alerting.cap.errors import CapRefused

# A CAP message with a few areas and their polygons is a few kilobytes; twelve hundred polygon points of a whole
# province are well under this. Anything larger is refused before the parser sees it.
MAX_BYTES = 512 * 1024
XINCLUDE = ("{http://www.w3.org/2001/XInclude}", "{http://www.w3.org/2003/XInclude}")
_DECLARED = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
# encodings expat reads itself; another declared encoding (GB2312, GBK, GB18030) is decoded here first
_EXPAT = {"utf-8", "utf-16", "us-ascii", "ascii", "iso-8859-1", "latin-1"}


# CAP nests five deep (alert/info/area/geocode/value); a document far deeper is built to exhaust whatever walks it
MAX_DEPTH = 16


def hostile(message: str) -> CapRefused:
    return CapRefused("", message, status=400, slug="cap-hostile-xml")


def read_xml(data: bytes) -> Element:
    """The document's root element, or CapRefused naming what was wrong with the document."""
    if len(data) > MAX_BYTES:
        raise CapRefused("", f"the message is {len(data)} bytes; at most {MAX_BYTES} are taken", status=413)
    if not data.strip():
        raise CapRefused("", "the message is empty", status=400, slug="cap-not-xml")
    data = _as_expat_reads(data)
    try:
        root: Element = safe_tree.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DTDForbidden as exc:
        raise hostile(
            f"the document has a DTD (<!DOCTYPE {exc.name}>); CAP needs none, and it is refused before anything in it "
            "is read or resolved"
        ) from None
    except EntitiesForbidden as exc:
        raise hostile(f"the document declares the entity {exc.name!r}; entities are refused unresolved") from None
    except ExternalReferenceForbidden as exc:
        raise hostile(f"the document refers to an external resource ({exc.sysid}); nothing of it was read") from None
    except ParseError as exc:
        line, column = exc.position
        raise CapRefused(
            "", f"not well-formed XML at line {line}, column {column + 1}", status=400, slug="cap-not-xml"
        ) from None
    stack = [(root, 1)]  # walked without recursion: the depth is what is being checked
    while stack:
        element, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise hostile(f"the document nests elements more than {MAX_DEPTH} deep; CAP needs five")
        stack.extend((child, depth + 1) for child in element)
    for element in root.iter():
        if isinstance(element.tag, str) and element.tag.startswith(XINCLUDE):
            raise hostile("the document uses XInclude; nothing is included, and the message is refused")
    return root


def _as_expat_reads(data: bytes) -> bytes:
    """The document in UTF-8 when it declares an encoding expat cannot read itself (GB2312/GBK/GB18030 are
    common in Chinese systems); otherwise as it came."""
    found = _DECLARED.match(data[:200])
    if found is None:
        return data
    name = found.group(1).decode("ascii").lower()
    if name in _EXPAT:
        return data
    try:
        codec = codecs.lookup(name)
        text = data.decode(codec.name)
    except (LookupError, UnicodeDecodeError):
        raise CapRefused(
            "", f"the document says it is in {name}, and it cannot be read as that", status=400, slug="cap-not-xml"
        ) from None
    return text.replace(found.group(1).decode("ascii"), "UTF-8", 1).encode("utf-8")
