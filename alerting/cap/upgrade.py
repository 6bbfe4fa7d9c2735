"""CAP 1.1 to 1.2: the namespace, and what 1.2 made stricter, so that the upgraded message can be validated as 1.2.

What changed between the two schemas and is rewritten here:
- the namespace, `urn:oasis:names:tc:emergency:cap:1.1` → `...:1.2`, on every element;
- times (`sent`, `effective`, `onset`, `expires`): 1.1 took any xs:dateTime, 1.2 only `YYYY-MM-DDThh:mm:ss±hh:mm`.
  `Z` becomes `-00:00` (1.2 spells UTC so), fractions of a second are dropped; a time without a zone is
  refused, since nobody can tell which time it meant;
- the times inside `references` (`sender,identifier,sent`), the same way;
- `resource/mimeType` became required: a 1.1 resource without one gets `application/octet-stream`.
What did not change needs nothing: 1.2 only added values (responseType Avoid and AllClear) and the signature slot.
`altitude` and `ceiling` became decimals; a 1.1 message with words there is refused by the 1.2 schema.
"""

from __future__ import annotations

import re
from xml.etree.ElementTree import Element

from alerting.cap.errors import CapRefused
from alerting.cap.paths import element_paths, local
from alerting.cap.schema import CAP11, CAP12

TIMES = frozenset({"sent", "effective", "onset", "expires"})
_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?$")


def upgraded(root: Element) -> tuple[Element, str]:
    """(the message as CAP 1.2, the version it came in). A 1.2 message comes back as it is."""
    if root.tag == f"{{{CAP12}}}alert":
        return root, "1.2"
    if root.tag != f"{{{CAP11}}}alert":
        raise CapRefused("", f"not a CAP 1.1 or 1.2 alert: the root element is {root.tag}")
    paths = element_paths(root)
    for elem in root.iter():
        if isinstance(elem.tag, str) and elem.tag.startswith(f"{{{CAP11}}}"):
            name = local(elem.tag)
            if name in TIMES:
                elem.text = _time_12(elem.text or "", paths[id(elem)])
            if name == "references":
                elem.text = " ".join(_reference_12(r, paths[id(elem)]) for r in (elem.text or "").split())
            if name == "resource" and elem.find(f"{{{CAP11}}}mimeType") is None:
                _insert_mime_type(elem)
            elem.tag = f"{{{CAP12}}}{name}"
    return root, "1.1"


def _time_12(text: str, where: str) -> str:
    found = _TIME.match(text.strip())
    if found is None:
        return text  # the 1.2 schema names it
    stamp, _fraction, zone = found.groups()
    if zone is None:
        raise CapRefused(where, f"the time {text.strip()} has no time zone; CAP 1.2 needs one (e.g. +08:00)")
    return stamp + ("-00:00" if zone == "Z" else zone)


def _reference_12(reference: str, where: str) -> str:
    """`sender,identifier,sent` with its time in the 1.2 form; anything else is left for the rules to name."""
    parts = reference.split(",")
    if len(parts) != 3:
        return reference
    return ",".join([*parts[:2], _time_12(parts[2], where)])


def _insert_mime_type(resource: Element) -> None:
    mime = Element(f"{{{CAP11}}}mimeType")
    mime.text = "application/octet-stream"
    desc = resource.find(f"{{{CAP11}}}resourceDesc")
    resource.insert(list(resource).index(desc) + 1 if desc is not None else 0, mime)  # 1.2: right after it
