"""One vocabulary: every stored value a person can meet has its own word, and the same word everywhere."""

from __future__ import annotations

from enum import StrEnum

import pytest

from alerting.model.access import AccountRole
from alerting.model.domain import (
    AlertStatus,
    ChannelKind,
    DeliveryState,
    DeviceKind,
    Level,
    Role,
    TargetKind,
    TargetState,
    UnitKind,
)
from alerting.views import labels
from alerting.views.labels import label


@pytest.mark.parametrize(
    ("table", "enum"),
    [
        (labels.ALERT_STATUS_LABEL, AlertStatus),
        (labels.TARGET_STATE_LABEL, TargetState),
        (labels.DELIVERY_STATE_LABEL, DeliveryState),
        (labels.DEVICE_KIND_LABEL, DeviceKind),
        (labels.TARGET_KIND_LABEL, TargetKind),
        (labels.UNIT_KIND_LABEL, UnitKind),
        (labels.CHANNEL_LABEL, ChannelKind),
        (labels.LEVEL_LABEL, Level),
        (labels.ACCOUNT_ROLE_LABEL, AccountRole),
    ],
)
def test_every_stored_value_has_a_chinese_word(table: dict[str, str], enum: type[StrEnum]) -> None:
    for member in enum:
        word = label(table, member.value)
        assert word != member.value, f"{enum.__name__}.{member.name} has no word"
        assert any("\u4e00" <= ch <= "\u9fff" for ch in word), word


def test_a_device_target_role_reads_as_its_kind_and_a_person_as_their_duty() -> None:
    assert labels.role_label(DeviceKind.SIREN.value) == labels.DEVICE_KIND_LABEL["siren"] == "预警器（大喇叭）"
    assert labels.role_label(Role.GRID_WORKER.value) == "网格员"
    # the two vocabularies that share the table cannot give one key two words
    assert not set(Role) & set(DeviceKind)


def test_an_unexpected_value_is_shown_as_it_is_rather_than_hidden() -> None:
    assert label(labels.DELIVERY_STATE_LABEL, "teleported") == "teleported"
    assert label(labels.DELIVERY_STATE_LABEL, None) == ""
