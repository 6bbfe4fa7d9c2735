"""What people read and hear. One place for the wording, so every channel says the same thing."""

from __future__ import annotations

from dataclasses import dataclass

from alerting.model.domain import Level, Purpose, TaskKind

SENDER = "【巫溪县应急】"


@dataclass(frozen=True)
class AlertText:
    level: Level
    hazard: str
    title: str
    text: str
    instructions: str
    exercise: bool


@dataclass(frozen=True)
class About:
    """The silent target an escalation is about."""

    name: str
    role: str
    unit: str


@dataclass(frozen=True)
class Rendered:
    title: str
    text: str
    short_text: str
    spoken_text: str


def _sentences(*parts: str) -> str:
    """Parts joined as sentences: a full stop after each, unless it already ends one (no "。。")."""
    out = []
    for part in (p.strip() for p in parts):
        if part:
            out.append(part if part[-1] in "。！？!?." else part + "。")
    return "".join(out)


def _headline(a: AlertText) -> str:
    drill = "【演练】" if a.exercise else ""
    return f"{drill}{a.level.label}{a.hazard}预警"


def render(
    a: AlertText,
    purpose: Purpose,
    *,
    ack_url: str | None,
    about: About | None = None,
    task: TaskKind | None = None,
) -> Rendered:
    head = _headline(a)
    link = f" 请点击链接回复“收到”：{ack_url}" if ack_url else ""
    if purpose is Purpose.LIFT:
        text = SENDER + _sentences(f"{head}已解除", a.title, "感谢各位坚守岗位")
        return Rendered(f"{head}解除", text, text, f"{head}已解除。")
    if purpose is Purpose.HELP:
        who = f"{about.role}{about.name}（{about.unit}）" if about else "有责任人"
        text = f"{SENDER}{head}求助：{who}报告需要帮助，请立即联系并组织支援。"
        return Rendered(f"{head}求助", text, text, f"{head}求助。{who}报告需要帮助，请立即联系并组织支援。")
    if purpose is Purpose.TASK:
        what = task.value if task else "人工通知"
        where = f"（{about.unit}）" if about else ""
        text = (
            f"{SENDER}人工任务：{_sentences(what + where, f'{head}：{a.title}', a.instructions)}"
            f"完成后请填报户数和转移人数。{link}"
        )
        return Rendered(f"{what}任务", text, text, _sentences(f"请立即{what}", head, a.title))
    if about is not None:
        text = (
            f"{SENDER}{head}叫应升级：{about.role}{about.name}（{about.unit}）未回复。"
            f"请立即联系落实，并代为确认。{link}"
        )
        spoken = f"{head}叫应升级。{about.unit}{about.role}{about.name}未回复，请立即联系落实。"
        return Rendered(f"{head}叫应升级", text, text, spoken)
    text = f"{SENDER}{_sentences(f'{head}：{a.title}', a.text, a.instructions)}{link}"
    short = f"{SENDER}{_sentences(f'{head}：{a.title}', a.instructions)}{link}"
    spoken = _sentences(head, a.title, a.text, a.instructions)
    return Rendered(f"{head}：{a.title}", text, short, spoken)
