"""Validation against the OASIS CAP 1.2 schema shipped in schema/ (see schema/NOTICE.md)."""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from xml.etree.ElementTree import Element

import xmlschema

from alerting.cap.errors import CapRefused
from alerting.cap.paths import element_paths

CAP12 = "urn:oasis:names:tc:emergency:cap:1.2"
CAP11 = "urn:oasis:names:tc:emergency:cap:1.1"


@cache
def cap12() -> xmlschema.XMLSchema:
    """Built once, from the schema's text. defuse='always': xmlschema parses whatever it reads itself with its
    defusing parser too; allow='none': it fetches nothing, for the schema (which imports nothing) or a message."""
    text = (files("alerting.cap") / "schema" / "CAP-v1.2.xsd").read_text(encoding="utf-8")
    return xmlschema.XMLSchema(text, defuse="always", allow="none")


def schema_errors(root: Element) -> list[tuple[str, str]]:
    """(element path, reason) of everything the schema finds wrong; empty when the message is valid."""
    paths = element_paths(root)
    found: list[tuple[str, str]] = []
    for error in cap12().iter_errors(root, use_location_hints=False):
        elem = error.elem
        where = paths.get(id(elem), "") if isinstance(elem, Element) else ""
        reason = (error.reason or str(error.message)).strip().replace(f"{{{CAP12}}}", "cap:")
        found.append((where or "alert", reason))
    return found


def validate(root: Element) -> None:
    """Refuse a message the schema refuses, naming the first element it finds wrong."""
    if root.tag != f"{{{CAP12}}}alert":
        raise CapRefused("", f"the document is not a CAP 1.2 alert (its root element is {root.tag})")
    errors = schema_errors(root)
    if errors:
        where, reason = errors[0]
        more = f" ({len(errors) - 1} more)" if len(errors) > 1 else ""
        raise CapRefused(where, f"the CAP 1.2 schema refuses it: {reason}{more}")


def is_valid(root: Element) -> bool:
    return root.tag == f"{{{CAP12}}}alert" and not schema_errors(root)
