"""Where an element stands in a message, as refusals name it: `info[0]/area[1]/polygon[0]`.

Elements the schema lets repeat carry their index among their siblings of the same name (from 0); the others
are named alone. The root (`alert`) is left out.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element

REPEATED = frozenset(
    {"info", "area", "resource", "parameter", "eventCode", "geocode", "polygon", "circle", "code", "category"}
    | {"responseType"}
)


def local(tag: object) -> str:
    text = tag if isinstance(tag, str) else ""
    return text.rpartition("}")[2]


def element_paths(root: Element) -> dict[int, str]:
    """The path of every element under root, keyed by id(element)."""
    out: dict[int, str] = {id(root): ""}

    def walk(parent: Element, prefix: str) -> None:
        seen: dict[str, int] = {}
        for child in parent:
            name = local(child.tag)
            if not name:
                continue  # a comment or processing instruction kept by a parser
            n = seen.get(name, 0)
            seen[name] = n + 1
            step = f"{name}[{n}]" if name in REPEATED else name
            path = f"{prefix}/{step}" if prefix else step
            out[id(child)] = path
            walk(child, path)

    walk(root, "")
    return out
