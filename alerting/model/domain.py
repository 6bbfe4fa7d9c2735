"""The words of the domain as enums; values are what the database and the API store."""

from __future__ import annotations

from enum import StrEnum


class Level(StrEnum):
    """Warning level; the CAP severity is what other systems understand."""

    RED = "red"
    ORANGE = "orange"
    YELLOW = "yellow"
    BLUE = "blue"

    @property
    def cap_severity(self) -> str:
        return _CAP_SEVERITY[self]

    @property
    def label(self) -> str:
        return _LEVEL_LABEL[self]

    @property
    def rank(self) -> int:
        """Higher is more severe, for comparing an update with the alert it replaces."""
        return _LEVEL_RANK[self]


_CAP_SEVERITY = {Level.RED: "Extreme", Level.ORANGE: "Severe", Level.YELLOW: "Moderate", Level.BLUE: "Minor"}
_LEVEL_LABEL = {Level.RED: "红色", Level.ORANGE: "橙色", Level.YELLOW: "黄色", Level.BLUE: "蓝色"}
_LEVEL_RANK = {Level.RED: 4, Level.ORANGE: 3, Level.YELLOW: 2, Level.BLUE: 1}


class UnitKind(StrEnum):
    COUNTY = "county"
    TOWNSHIP = "township"
    VILLAGE = "village"
    GRID = "grid"

    @property
    def label(self) -> str:
        return {"county": "区县", "township": "乡镇/街道", "village": "村/社区", "grid": "网格"}[self.value]


UNIT_CHILD_KIND = {
    UnitKind.COUNTY: UnitKind.TOWNSHIP,
    UnitKind.TOWNSHIP: UnitKind.VILLAGE,
    UnitKind.VILLAGE: UnitKind.GRID,
}


class Role(StrEnum):
    """What a responsible person answers for at their unit."""

    GRID_WORKER = "grid_worker"
    VILLAGE_HEAD = "village_head"
    TOWNSHIP_DUTY = "township_duty"
    COUNTY_DUTY = "county_duty"

    @property
    def label(self) -> str:
        return {
            "grid_worker": "网格员",
            "village_head": "村（社区）负责人",
            "township_duty": "乡镇值班员",
            "county_duty": "县值班室",
        }[self.value]


class ChannelKind(StrEnum):
    BROADCAST = "broadcast"
    DEVICE = "device"
    VOICE = "voice"
    SMS = "sms"
    WECOM = "wecom"
    EMAIL = "email"
    MANUAL = "manual"

    @property
    def label(self) -> str:
        return {
            "broadcast": "应急广播",
            "device": "预警设备",
            "voice": "智能外呼",
            "sms": "短信",
            "wecom": "企业微信",
            "email": "邮件",
            "manual": "人工任务",
        }[self.value]


PERSON_CHANNELS = (ChannelKind.VOICE, ChannelKind.SMS, ChannelKind.WECOM, ChannelKind.EMAIL)


class DeviceKind(StrEnum):
    SIREN = "siren"
    BROADCAST_ZONE = "broadcast_zone"
    SATELLITE = "satellite"

    @property
    def label(self) -> str:
        return {"siren": "预警器（大喇叭）", "broadcast_zone": "应急广播区", "satellite": "卫星叫应终端"}[self.value]


class TargetKind(StrEnum):
    PERSON = "person"
    DEVICE = "device"


class AlertStatus(StrEnum):
    ACTIVE = "active"
    CLOSED = "closed"  # every target answered or answered for
    CANCELLED = "cancelled"  # 解除
    SUPERSEDED = "superseded"  # replaced by an update


# an alert replaced or lifted: what it still had going is stopped (issue.stopping), none of it sent
STOPPED_BY = (AlertStatus.SUPERSEDED.value, AlertStatus.CANCELLED.value)


class TargetState(StrEnum):
    OPEN = "open"
    ANSWERED = "answered"
    ANSWERED_FOR = "answered_for"  # someone above answered for them
    FAILED = "failed"  # a device that never confirmed; a manual task stands in
    CANCELLED = "cancelled"

    @property
    def closed(self) -> bool:
        return self in (TargetState.ANSWERED, TargetState.ANSWERED_FOR)


class DeliveryState(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def rank(self) -> int:
        """How much a state tells about what reached the recipient; a report moves a delivery only upward."""
        return _DELIVERY_RANK[self]


# Precedence of what we know about a delivery, whatever order the news arrives in: a provider's "delivered"
# (or a call picked up) beats its "failed" (undelivered, no answer, busy), which beats "sent" (the provider took
# it), which beats anything before the hand-over. A late, lesser report is kept as an audit event and changes
# nothing; a repeat of the same report is a no-op.
_DELIVERY_RANK = {"pending": 0, "sending": 0, "cancelled": 0, "sent": 1, "failed": 2, "delivered": 3}


def merged_state(current: str, incoming: DeliveryState) -> DeliveryState | None:
    """The state a delivery moves to when `incoming` is reported, or None when what it has already wins."""
    return incoming if incoming.rank > DeliveryState(current).rank else None


class Purpose(StrEnum):
    """Why a delivery goes out."""

    WARN = "warn"  # the warning itself, or an escalation about a silent target
    LIFT = "lift"  # the alert was lifted (解除)
    TASK = "task"  # a manual task: 鸣锣吹哨 or 敲门入户
    HELP = "help"  # someone answered and asked for help: their duty officers hear at once


class DeadlineState(StrEnum):
    PENDING = "pending"
    FIRED = "fired"
    CANCELLED = "cancelled"


class TaskKind(StrEnum):
    GONG = "鸣锣吹哨"
    DOOR_TO_DOOR = "敲门入户"


# A village head gets one task of a kind per alert, however many of the village's devices stay silent: the task
# stands in for all of them. A device whose task is already out gets a cancelled task row naming, under this key
# of its detail, the target whose task it shares; answering that task answers it too.
TASK_SHARED_WITH = "shared_with"
