"""Turning an uploaded text file's bytes into text, or a clear refusal naming the file."""

from __future__ import annotations

import codecs

ENCODINGS = "UTF-8, UTF-16 (带 BOM with BOM, Excel 'Unicode 文本'), GBK/GB18030"
_FIX = "请在 Excel 中另存为 'CSV UTF-8' 或 .xlsx 后重新导入 save it as 'CSV UTF-8' or .xlsx and import again"
# what a file that is not text most often is, told by its first bytes, with what to do about it
_LOOKS_LIKE = (
    (
        b"PK\x03\x04",
        "它像是 Excel 工作簿 it looks like an .xlsx workbook: 请用 .xlsx 扩展名上传 give it the .xlsx name",
    ),
    (b"\xd0\xcf\x11\xe0", "它像是旧版 Excel .xls 工作簿 it looks like an old .xls workbook, which is not read"),
)


class UnreadableFile(ValueError):
    def __init__(self, name: str, raw: bytes = b"") -> None:
        hint = next((f"{said}; " for magic, said in _LOOKS_LIKE if raw.startswith(magic)), "")
        super().__init__(
            f"{name}: 无法读取 cannot read this file as text; read encodings are {ENCODINGS}. {hint}{_FIX}"
        )
        self.name = name


def unreadable_workbook(name: str, why: object) -> str:
    """What to say about a workbook openpyxl cannot open: which file, what is read, and what to do."""
    return (
        f"{name}: 无法打开工作簿 cannot open the workbook ({why}); .xlsx and .xlsm are read, as are CSV files in "
        f"{ENCODINGS}. {_FIX}"
    )


def decode_text(name: str, raw: bytes) -> str:
    # Excel's "Unicode text" is UTF-16 with a BOM; without the BOM UTF-16 cannot be told from binary safely
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            text = raw.decode("utf-16")
        except UnicodeDecodeError:
            raise UnreadableFile(name, raw) from None
    else:
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            try:
                # Excel on Chinese Windows saves CSV in GBK; GB18030 is its superset
                text = raw.decode("gb18030")
            except UnicodeDecodeError:
                raise UnreadableFile(name, raw) from None
    # GB18030 maps almost any byte run to something; control characters are what gives binary away
    if any(c < " " and c not in "\t\r\n" for c in text):
        raise UnreadableFile(name, raw)
    return text


def delimiter(text: str) -> str:
    """Excel's "Unicode 文本" separates columns with tabs, CSV with commas: the header line says which."""
    header = next((line for line in text.splitlines() if line.strip()), "")
    return "\t" if "\t" in header and "," not in header else ","
