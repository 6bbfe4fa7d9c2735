"""An uploaded roster's bytes as text: what Excel and WPS on Chinese Windows save is read, binary is refused by name."""

from __future__ import annotations

import codecs

import pytest

from config.directory.text import UnreadableFile, decode_text

ROSTER = "单位编码,姓名,手机\n50023810100101,张网格,13900000001\n50023810100102,李德馨,13900000002\n"


@pytest.mark.parametrize(
    ("how", "raw"),
    [
        ("UTF-8 (CSV UTF-8 without a BOM)", ROSTER.encode("utf-8")),
        ("UTF-8 with a BOM (Excel's 'CSV UTF-8')", codecs.BOM_UTF8 + ROSTER.encode("utf-8")),
        ("UTF-16 LE with a BOM (Excel's 'Unicode 文本')", codecs.BOM_UTF16_LE + ROSTER.encode("utf-16-le")),
        ("UTF-16 BE with a BOM", codecs.BOM_UTF16_BE + ROSTER.encode("utf-16-be")),
        ("GBK (Excel's plain CSV on Chinese Windows)", ROSTER.encode("gbk")),
        ("GB18030", ROSTER.encode("gb18030")),
    ],
)
def test_what_spreadsheets_save_is_read_as_the_same_text(how: str, raw: bytes) -> None:
    assert decode_text("网格员名册.csv", raw) == ROSTER, how


def test_a_name_only_gb18030_has_is_read_too() -> None:
    text = "50023810100101,𠀾,13900000001\n"  # outside GBK: four bytes in GB18030
    assert decode_text("名册.csv", text.encode("gb18030")) == text


@pytest.mark.parametrize(
    ("what", "raw"),
    [
        ("an .xlsx (a zip) uploaded as CSV", b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00" + bytes(range(40))),
        ("a PNG", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00"),
        ("UTF-16 cut off mid-character", codecs.BOM_UTF16_LE + ROSTER.encode("utf-16-le")[:-1]),
        ("text with a NUL in it", "单位编码,姓名\n".encode() + b"\x00\x01"),
    ],
)
def test_what_is_not_text_is_refused_naming_the_file_and_what_to_do(what: str, raw: bytes) -> None:
    with pytest.raises(UnreadableFile) as refused:
        decode_text("上传名册.csv", raw)
    message = str(refused.value)
    assert message.startswith("上传名册.csv:"), what
    assert "CSV UTF-8" in message and ".xlsx" in message
    assert refused.value.name == "上传名册.csv"
