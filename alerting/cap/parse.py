"""From bytes to a message that is safe, schema-valid CAP 1.2 and keeps CAP's other rules; or a refusal."""

from __future__ import annotations

from alerting.cap import rules, safe, schema, upgrade
from alerting.cap.message import Message, read_message


def parse(data: bytes) -> Message:
    """In this order, each step refusing before the next runs: read without resolving anything, upgrade 1.1,
    validate against the 1.2 schema, check what the schema cannot."""
    root = safe.read_xml(data)
    root, version = upgrade.upgraded(root)
    schema.validate(root)
    message = read_message(root, version)
    rules.check(message)
    return message
