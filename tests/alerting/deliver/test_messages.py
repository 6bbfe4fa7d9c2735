"""The wording every channel sends: complete sentences, never a doubled full stop."""

from __future__ import annotations

from alerting.deliver.messages import AlertText, render
from alerting.model.domain import Level, Purpose


def test_text_that_already_ends_a_sentence_gets_no_second_full_stop() -> None:
    alert = AlertText(Level.RED, "山洪", "凤凰镇山洪预警", "预计3小时内发生山洪。", "立即转移沿河群众！", exercise=True)
    out = render(alert, Purpose.WARN, ack_url="https://jy.example/ack/t")
    for text in (out.text, out.short_text, out.spoken_text):
        assert "。。" not in text and "！。" not in text
    assert out.spoken_text == "【演练】红色山洪预警。凤凰镇山洪预警。预计3小时内发生山洪。立即转移沿河群众！"
    assert out.text.endswith("请点击链接回复“收到”：https://jy.example/ack/t")


def test_missing_full_stops_are_added_and_empty_instructions_leave_no_trace() -> None:
    alert = AlertText(Level.BLUE, "大风", "大风蓝色预警", "阵风8级", "", exercise=False)
    out = render(alert, Purpose.WARN, ack_url=None)
    assert out.spoken_text == "蓝色大风预警。大风蓝色预警。阵风8级。"
    assert out.text == "【巫溪县应急】蓝色大风预警：大风蓝色预警。阵风8级。"
