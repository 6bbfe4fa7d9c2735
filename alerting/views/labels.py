"""The one vocabulary of the read side: the Chinese word for every stored value a person reads.

Every page, report and export takes its words from here, so a siren is called the same thing on the board, in the
directory and in the printed report. The domain enums carry their own `.label`; these tables collect them with the
words for states, purposes and kinds that only the read side shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from alerting.model.access import ACCOUNT_ROLE_LABEL
from alerting.model.domain import (
    AlertStatus,
    ChannelKind,
    DeliveryState,
    DeviceKind,
    Level,
    Purpose,
    Role,
    TargetKind,
    TargetState,
    UnitKind,
)

ALERT_STATUS_LABEL: dict[str, str] = {
    AlertStatus.ACTIVE: "进行中",
    AlertStatus.CLOSED: "已闭环",
    AlertStatus.CANCELLED: "已解除",
    AlertStatus.SUPERSEDED: "已被更新取代",
}
TARGET_STATE_LABEL: dict[str, str] = {
    TargetState.OPEN: "未应答",
    TargetState.ANSWERED: "已应答",
    TargetState.ANSWERED_FOR: "代应答",
    TargetState.FAILED: "设备未确认",
    # open when the alert was lifted or replaced: never answered, and the report says so
    TargetState.CANCELLED: "预警结束时未应答",
}
DELIVERY_STATE_LABEL: dict[str, str] = {
    DeliveryState.PENDING: "待发送",
    DeliveryState.SENDING: "发送中",
    DeliveryState.SENT: "已发送",
    DeliveryState.DELIVERED: "已送达",
    DeliveryState.FAILED: "失败",
    DeliveryState.CANCELLED: "已取消",
}
DEVICE_KIND_LABEL: dict[str, str] = {k.value: k.label for k in DeviceKind}
# what a device did for one alert (views.device_state), and whether it was heard from
DEVICE_CONDITION_LABEL = {
    "sounding": "鸣响中",
    "played": "已播放",
    "confirmed_for": "已代为确认",
    "failed": "失败",
    "sent": "已下发，待确认",
    "waiting": "待下发",
    "stopped": "已停止",
}
DEVICE_LINK_LABEL = {"never_seen": "从未上报", "online": "在线", "offline": "离线"}
PURPOSE_LABEL: dict[str, str] = {Purpose.WARN: "预警", Purpose.LIFT: "解除", Purpose.TASK: "人工任务"}
TARGET_KIND_LABEL: dict[str, str] = {TargetKind.PERSON: "人员", TargetKind.DEVICE: "设备"}
UNIT_KIND_LABEL: dict[str, str] = {k.value: k.label for k in UnitKind}
CHANNEL_LABEL: dict[str, str] = {k.value: k.label for k in ChannelKind}
# a target's role: a person's duty, or for a device target the kind of device
ROLE_LABEL: dict[str, str] = {**{r.value: r.label for r in Role}, **DEVICE_KIND_LABEL}
LEVEL_LABEL: dict[str, str] = {lv.value: lv.label for lv in Level}
COUNTY_LEVEL = "县级"

# why the board sounds for an alert (views.board.Alarm.level), the more urgent the higher
ALARM_LABEL: dict[int, str] = {
    0: "",
    1: "新预警",
    2: "已升级到最后一步",
    3: "最后一步已超时，仍未应答",
}
# a phone call the duty officer made to a silent recipient and logged (answer.calls)
CALL_OUTCOME_LABEL: dict[str, str] = {
    "answered": "已接通，本人确认收到",
    "no_answer": "打过电话，未接通",
}
# the reason an answer on behalf carries when it was logged as a call that got through
CALL_ANSWERED_REASON = "值班员电话联系本人，确认收到"


def step_label(step: int) -> str:
    """An escalation step as the issue preview names it: the first wave is 首轮, then 第 1 步, 第 2 步…"""
    return "首轮" if step == 0 else f"第 {step} 步"


# the township column for targets that sit above every township

__all__ = [
    "ACCOUNT_ROLE_LABEL",
    "ALARM_LABEL",
    "ALERT_STATUS_LABEL",
    "CALL_ANSWERED_REASON",
    "CALL_OUTCOME_LABEL",
    "CHANNEL_LABEL",
    "COUNTY_LEVEL",
    "DELIVERY_STATE_LABEL",
    "DEVICE_CONDITION_LABEL",
    "DEVICE_KIND_LABEL",
    "DEVICE_LINK_LABEL",
    "LEVEL_LABEL",
    "PURPOSE_LABEL",
    "ROLE_LABEL",
    "TARGET_KIND_LABEL",
    "TARGET_STATE_LABEL",
    "UNIT_KIND_LABEL",
    "channel_label",
    "label",
    "role_label",
    "step_label",
]


def label(labels: Mapping[str, str], value: str | None) -> str:
    """The Chinese word for a stored value; an unexpected value is shown as it is rather than hidden."""
    if value is None:
        return ""
    # the enum members are str subclasses, so a stored plain string finds its member's entry
    return labels.get(value, value)


def channel_label(value: str | None) -> str:
    return label(CHANNEL_LABEL, value)


def role_label(value: str) -> str:
    return label(ROLE_LABEL, value)


def feedback_text(feedback: Mapping[str, Any] | None) -> str:
    """What was done, in the words a duty officer writes it: 转移 41 人，敲门 23 户，需要支援。"""
    if not feedback:
        return ""
    parts: list[str] = []
    rest = dict(feedback)
    if (moved := rest.pop("moved", None)) is not None:
        parts.append(f"转移 {moved} 人")
    if (households := rest.pop("households", None)) is not None:
        parts.append(f"敲门 {households} 户")
    help_needed = rest.pop("help_needed", None)
    if help_needed is True:
        parts.append("需要支援")
    elif help_needed is False:
        parts.append("无需支援")
    note = rest.pop("note", None)
    parts.extend(f"{k}：{v}" for k, v in sorted(rest.items()))
    if note:
        parts.append(f"备注：{note}")
    return "，".join(parts)
