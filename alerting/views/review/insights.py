"""What an auditor asks of one alert's report: how fast people answered, over what, what failed, how far
escalation had to go, who was never reached, who never answered, and who was answered for and why.

Pure functions of an AlertReport, so the page, the JSON API and the exports tell the same story.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from pydantic import BaseModel

from alerting.model.domain import DeliveryState, Purpose, TargetState
from alerting.views.labels import channel_label
from alerting.views.report import charts
from alerting.views.report.export import channels_text, escalation_text
from alerting.views.report.model import AlertReport, RecipientRow

# Upper edges in seconds; a duty officer thinks in these steps, not in equal-width bins.
ANSWER_BINS: tuple[tuple[float, str], ...] = (
    (60, "1分内"),
    (120, "1–2分"),
    (300, "2–5分"),
    (600, "5–10分"),
    (900, "10–15分"),
    (1800, "15–30分"),
    (3600, "30–60分"),
    (float("inf"), "60分以上"),
)
NO_ERROR = "（未给出原因）"


class Bin(BaseModel):
    label: str
    upper_s: float | None  # None: open-ended
    count: int


class ChannelCount(BaseModel):
    channel: str
    label: str
    count: int


class FailureRow(BaseModel):
    channel: str
    channel_label: str
    provider: str
    error: str
    count: int  # failed deliveries with this error
    recipients: int  # distinct targets they were about


class StepRow(BaseModel):
    step: int
    who: str  # what the plan says this step reaches
    reached: int  # targets whose escalation got at least this far
    stopped_here: int  # ... and got no further
    closed: int  # of those stopping here, how many were closed in the end


class Person(BaseModel):
    target_id: str
    name: str
    kind_label: str
    role_label: str
    township_name: str
    unit_name: str
    unit_code: str
    phone: str
    state_label: str
    step: int
    tried: str  # every attempt on the target itself, with provider status and id
    escalation: str


class OnBehalf(BaseModel):
    target_id: str
    name: str
    unit_name: str
    unit_code: str
    answered_by: str
    answered_at: datetime | None
    answer_s: float | None
    reason: str


class Insights(BaseModel):
    answered: int
    recipients: int
    window_s: int | None  # the first answer window of the plan, when escalation starts
    histogram: list[Bin]
    by_channel: list[ChannelCount]
    failures: list[FailureRow]
    escalation: list[StepRow]
    never_reached: list[Person]
    never_answered: list[Person]
    on_behalf: list[OnBehalf]


def _closed(r: RecipientRow) -> bool:
    return r.state in (TargetState.ANSWERED, TargetState.ANSWERED_FOR)


def histogram(seconds: list[float]) -> list[Bin]:
    counts = [0] * len(ANSWER_BINS)
    for s in seconds:
        counts[next(i for i, (upper, _) in enumerate(ANSWER_BINS) if s < upper)] += 1
    return [
        Bin(label=name, upper_s=None if upper == float("inf") else upper, count=n)
        for (upper, name), n in zip(ANSWER_BINS, counts, strict=True)
    ]


def _person(r: RecipientRow) -> Person:
    return Person(
        target_id=r.target_id,
        name=r.name,
        kind_label=r.kind_label,
        role_label=r.role_label,
        township_name=r.township_name,
        unit_name=r.unit_name,
        unit_code=r.unit_code,
        phone=r.phone,
        state_label=r.state_label,
        step=r.step,
        tried=channels_text(r) or "没有任何发送记录",
        escalation=escalation_text(r),
    )


def _reached(r: RecipientRow) -> bool:
    """Something sent to the target itself was confirmed delivered, or they answered it themselves."""
    own = [d for d in r.deliveries if d.to_target and d.purpose != Purpose.LIFT]
    return r.state == TargetState.ANSWERED or any(d.state == DeliveryState.DELIVERED for d in own)


def insights(report: AlertReport) -> Insights:
    rows = report.recipients
    closed = [r for r in rows if _closed(r)]
    waits = [r.answer_s for r in closed if r.answer_s is not None]
    channels = Counter(r.answer_channel or "" for r in closed)
    failures: Counter[tuple[str, str, str]] = Counter()
    failed_targets: dict[tuple[str, str, str], set[str]] = {}
    for r in rows:
        for d in r.deliveries:
            if d.state == DeliveryState.FAILED:
                key = (d.channel, d.provider or "", (d.error or "").strip() or NO_ERROR)
                failures[key] += 1
                failed_targets.setdefault(key, set()).add(r.target_id)
    deepest = max((r.step for r in rows), default=0)
    steps = []
    for step in range(deepest + 1):
        at_least = [r for r in rows if r.step >= step]
        here = [r for r in at_least if r.step == step]
        who = "首轮" if step == 0 else next((e.who for r in at_least for e in r.escalation if e.step == step), "")
        steps.append(
            StepRow(step=step, who=who, reached=len(at_least), stopped_here=len(here), closed=sum(map(_closed, here)))
        )
    first = next((p for p in report.plan if p.step == 0 and p.applies_to == "人员"), None)
    return Insights(
        answered=len(closed),
        recipients=len(rows),
        window_s=first.wait_s if first else None,
        histogram=histogram(waits),
        by_channel=[
            ChannelCount(channel=ch, label=channel_label(ch) or "未记录", count=n) for ch, n in channels.most_common()
        ],
        failures=[
            FailureRow(
                channel=ch,
                channel_label=channel_label(ch),
                provider=provider,
                error=error,
                count=n,
                recipients=len(failed_targets[(ch, provider, error)]),
            )
            for (ch, provider, error), n in failures.most_common()
        ],
        escalation=steps,
        never_reached=[_person(r) for r in rows if not _reached(r) and not _closed(r)],
        never_answered=[_person(r) for r in rows if not _closed(r)],
        on_behalf=[
            OnBehalf(
                target_id=r.target_id,
                name=r.name,
                unit_name=r.unit_name,
                unit_code=r.unit_code,
                answered_by=r.answered_by_name,
                answered_at=r.answered_at,
                answer_s=r.answer_s,
                reason=r.on_behalf_reason or "",
            )
            for r in rows
            if r.state == TargetState.ANSWERED_FOR
        ],
    )


def answer_time_chart(found: Insights) -> str:
    bars = [charts.Bar(b.label, b.count) for b in found.histogram]
    return charts.bar_chart(bars, title="应答用时分布（自发布起）", unit="人")


def answer_curve_chart(report: AlertReport, found: Insights) -> str:
    waits = [r.answer_s for r in report.recipients if _closed(r) and r.answer_s is not None]
    return charts.cdf_chart(
        waits, total=found.recipients, title="累计应答比例（自发布起，分钟）", window_s=found.window_s
    )


def channel_chart(found: Insights) -> str:
    total = sum(c.count for c in found.by_channel) or 1
    bars = [charts.Bar(c.label, c.count, note=f"（{c.count / total:.0%}）") for c in found.by_channel]
    return charts.hbar_chart(bars, title="应答渠道", unit="人", empty="还没有人应答")


def charts_for(report: AlertReport, found: Insights) -> dict[str, str]:
    return {
        "answer_time": answer_time_chart(found),
        "answer_curve": answer_curve_chart(report, found),
        "channels": channel_chart(found),
    }
