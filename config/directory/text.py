"""Turning an uploaded text file's bytes into text, or a clear refusal naming the file."""

from __future__ import annotations

import codecs

ENCODINGS = "UTF-8, UTF-16 (带 BOM with BOM, Excel 'Unicode 文本'), GBK/GB18030"


class UnreadableFile(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"{name}: 无法读取 cannot read this file as text; read encodings are {ENCODINGS}. "
            "请在 Excel 中另存为 'CSV UTF-8' 或 .xlsx 后重新导入 save it as 'CSV UTF-8' or .xlsx and import again"
        )
        self.name = name


def decode_text(name: str, raw: bytes) -> str:
    # Excel's "Unicode text" is UTF-16 with a BOM; without the BOM UTF-16 cannot be told from binary safely
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            text = raw.decode("utf-16")
        except UnicodeDecodeError:
            raise UnreadableFile(name) from None
    else:
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            try:
                # Excel on Chinese Windows saves CSV in GBK; GB18030 is its superset
                text = raw.decode("gb18030")
            except UnicodeDecodeError:
                raise UnreadableFile(name) from None
    # GB18030 maps almost any byte run to something; control characters are what gives binary away
    if any(c < " " and c not in "\t\r\n" for c in text):
        raise UnreadableFile(name)
    return text
