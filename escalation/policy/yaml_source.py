"""YAML that remembers where each value came from, so a bad field can be named by its line and column.

PyYAML composes a node tree before it builds Python objects; the nodes keep their marks. A pydantic
error `loc` such as ('levels', 'red', 'person_steps', 2, 'wait_s') is walked down that tree to the node.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

Loc = tuple[str | int, ...]
KEY = "[key]"  # pydantic's loc part for a bad dictionary key


@dataclass(frozen=True)
class Position:
    """1-based, as editors count."""

    line: int
    column: int


class YamlSyntaxError(ValueError):
    def __init__(self, problem: str, position: Position) -> None:
        super().__init__(problem)
        self.problem = problem
        self.position = position


def _position(mark: yaml.Mark | None) -> Position:
    return Position(mark.line + 1, mark.column + 1) if mark else Position(1, 1)


@dataclass(frozen=True)
class Document:
    data: Any
    root: yaml.Node | None
    # keys given twice in one mapping: PyYAML silently keeps the last, which would hide a plan
    duplicate_keys: list[tuple[Loc, Position, str]]

    def position(self, loc: Sequence[str | int]) -> Position:
        """Where the value at `loc` is; where the walk stops (a missing field) its nearest enclosing node."""
        node = self.root
        if node is None:
            return Position(1, 1)
        key: yaml.Node | None = None
        for part in loc:
            if part == KEY and key is not None:
                return _position(key.start_mark)
            child = _child(node, part)
            if child is None:
                break
            key, node = child
        return _position(node.start_mark)


def _duplicate_keys(root: yaml.Node | None) -> list[tuple[Loc, Position, str]]:
    found: list[tuple[Loc, Position, str]] = []
    for loc, node in _walk(root, (), set()):
        if not isinstance(node, yaml.MappingNode):
            continue
        seen: dict[str, Position] = {}
        for k, _ in node.value:
            name = str(k.value)
            here = _position(k.start_mark)
            if name in seen:
                found.append(((*loc, name), here, f"given twice in one mapping (first at line {seen[name].line})"))
            else:
                seen[name] = here
    return found


def _child(node: yaml.Node, part: str | int) -> tuple[yaml.Node | None, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in reversed(node.value):  # the last of duplicate keys is the one PyYAML kept
            if isinstance(k, yaml.ScalarNode) and k.value == str(part):
                return k, v
        return None
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        return None, node.value[part]
    return None


def _walk(node: yaml.Node | None, loc: Loc, seen: set[int]) -> Iterator[tuple[Loc, yaml.Node]]:
    if node is None or id(node) in seen:  # an alias points at a node already visited
        return
    seen.add(id(node))
    yield loc, node
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            yield from _walk(v, (*loc, str(k.value)), seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            yield from _walk(v, (*loc, i), seen)


def load(text: str) -> Document:
    """Parse one YAML document with safe types. Blocking only on CPU; raises YamlSyntaxError with a position."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        # before constructing: that flattens `<<:` merge keys, and a key overriding a merged one is no mistake
        duplicates = _duplicate_keys(root)
        # constructing also rewrites merged mappings in the tree, so positions then match the data
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        problem = ": ".join(p for p in (exc.context, exc.problem) if p) or str(exc)
        raise YamlSyntaxError(problem, _position(exc.problem_mark or exc.context_mark)) from exc
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(str(exc), Position(1, 1)) from exc
    finally:
        loader.dispose()
    return Document(data, root, duplicates)
