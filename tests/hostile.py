"""Hostile files built inside the tests (small and quick): zip bombs, oversized sheets, crowded zips."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

_DOCX_HEAD = (b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document xmlns:w='
              b'"http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>')


def _rezip(data: bytes, replace: dict[str, bytes], extra: dict[str, bytes] | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, replace.get(info.filename, src.read(info)))
        for name, content in (extra or {}).items():
            dst.writestr(name, content)
    return out.getvalue()


def _blank_docx() -> bytes:
    import docx

    buffer = io.BytesIO()
    docx.Document().save(buffer)
    return buffer.getvalue()


def docx_bomb(path: Path, inflated_mb: int) -> Path:
    """A .docx whose word/document.xml inflates to about `inflated_mb` MB (it compresses ~400:1)."""
    paragraph = b"<w:p><w:r><w:t>" + b"a" * 1000 + b"</w:t></w:r></w:p>"
    body = _DOCX_HEAD + paragraph * (inflated_mb * 1024) + b"</w:body></w:document>"
    path.write_bytes(_rezip(_blank_docx(), {"word/document.xml": body}))
    return path


def docx_with_entries(path: Path, entries: int) -> Path:
    """A valid .docx padded with `entries` tiny extra zip members."""
    extra = {f"padding/part{i}.xml": b"<a/>" for i in range(entries)}
    path.write_bytes(_rezip(_blank_docx(), {}, extra))
    return path


def wide_xlsx(path: Path, declared: bool = True) -> Path:
    """A small .xlsx whose sheet reaches column 16,384 (XFD) and row 1,048,576: a FAQ header, one row,
    and one cell in the far corner. With `declared`, its <dimension> says A1:XFD1048576; without, only
    the cells tell."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.append(["question", "answer"])
    sheet.append(["Do you open on Sundays?", "No, we are closed on Sundays."])
    sheet.cell(row=1_048_576, column=16_384, value="x")
    buffer = io.BytesIO()
    book.save(buffer)
    data = buffer.getvalue()
    if not declared:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            xml = z.read("xl/worksheets/sheet1.xml")
        data = _rezip(data, {"xl/worksheets/sheet1.xml": re.sub(rb"<dimension [^>]*/>", b"", xml)})
    path.write_bytes(data)
    return path
