"""The one way the core builds a Jinja environment over its package templates: escaped, strict, tidy."""

from __future__ import annotations

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from alerting.model.clock import local_text


def environment() -> Environment:
    """A new environment over alerting/templates; callers add their own filters and globals and keep it."""
    env = Environment(
        loader=PackageLoader("alerting.web", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,  # a misspelt name in a template fails loudly instead of printing nothing
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["local"] = local_text
    return env
