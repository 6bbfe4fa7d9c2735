"""Every message in the invalid corpus is refused, and the refusal names the element that is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from alerting.cap.errors import CapRefused
from alerting.cap.mapping import CapMapping, map_message
from alerting.cap.parse import parse
from alerting.issue.warning_texts import hazards

CORPUS = Path(__file__).parent / "corpus"

# file → (the element named, words the reason says)
REFUSED = {
    "no_sender.xml": ("alert", "schema"),
    "bad_severity.xml": ("info[0]/severity", "schema"),
    "sent_with_z.xml": ("sent", "schema"),
    "identifier_with_space.xml": ("identifier", "space"),
    "sender_with_comma.xml": ("sender", "','"),
    "restricted_without_restriction.xml": ("restriction", "Restricted"),
    "private_without_addresses.xml": ("addresses", "Private"),
    "polygon_open.xml": ("info[0]/area[0]/polygon[0]", "not closed"),
    "polygon_three_pairs.xml": ("info[0]/area[0]/polygon[0]", "at least 4"),
    "polygon_not_wgs84.xml": ("info[0]/area[0]/polygon[0]", "WGS 84"),
    "circle_without_radius.xml": ("info[0]/area[0]/circle[0]", "radius"),
    "update_without_references.xml": ("references", "must reference"),
    "references_malformed.xml": ("references", "sender,identifier,sent"),
    "cap11_time_without_zone.xml": ("sent", "time zone"),
    "not_cap.xml": ("", "not a CAP 1.1 or 1.2 alert"),
    "not_well_formed.xml": ("", "not well-formed"),
    # the mapping's refusals
    "circle_only.xml": ("info[0]/area[0]/circle[0]", "carry no coordinates"),
    "level_parameter_unknown.xml": ("info[0]/parameter[0]", "purple"),
    "unknown_severity_no_level.xml": ("info[0]/severity", "maps to no level"),
    "system_status.xml": ("status", "System"),
    "headline_too_long.xml": ("info[0]/headline", "at most 200"),
}


def _take(data: bytes) -> None:
    map_message(parse(data), CapMapping(), hazards())


@pytest.mark.parametrize(("name", "expected"), sorted(REFUSED.items()))
def test_refusal_names_the_element(name: str, expected: tuple[str, str]) -> None:
    element, words = expected
    with pytest.raises(CapRefused) as caught:
        _take((CORPUS / "invalid" / name).read_bytes())
    assert caught.value.element == element, caught.value
    assert words in caught.value.message


def test_every_valid_message_parses_and_maps() -> None:
    for path in sorted((CORPUS / "valid").glob("*.xml")):
        _take(path.read_bytes())


def test_cap11_is_upgraded_then_validated_as_12() -> None:
    message = parse((CORPUS / "valid" / "cap11_heat.xml").read_bytes())
    assert message.version == "1.1"
    assert message.sent == "2026-08-01T02:00:00-00:00"  # Z is spelled -00:00 in 1.2
    assert message.infos[0].expires == "2026-08-02T02:00:00-00:00"  # and fractions of a second are dropped


def test_the_level_parameter_wins_over_severity() -> None:
    mapped = map_message(parse((CORPUS / "valid" / "rainstorm_red.xml").read_bytes()), CapMapping(), hazards())
    assert (mapped.level, mapped.level_from, mapped.hazard) == ("red", "parameter", "暴雨")


def test_the_severity_mapping_is_configurable() -> None:
    mapping = CapMapping(severity_levels={"Moderate": "orange"})
    mapped = map_message(parse((CORPUS / "valid" / "village_severity_only.xml").read_bytes()), mapping, hazards())
    assert (mapped.level, mapped.level_from) == ("orange", "severity")
    assert mapped.title == "东坪村地质灾害气象风险黄色预警"  # the Chinese info block is the one taken
