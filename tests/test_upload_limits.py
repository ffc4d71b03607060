"""Hostile files are refused with the limit they cross, while they are read (index/limits.py)."""

from __future__ import annotations

import time
import tracemalloc

import pytest

from index.ingest import IngestError, load_document
from index.limits import MB, IngestLimits
from tests.hostile import docx_bomb, docx_with_entries, wide_xlsx


def refused(path, limits=None) -> tuple[IngestError, int]:
    """The IngestError load_document raises, and the peak Python memory it allocated meanwhile."""
    tracemalloc.start()
    try:
        with pytest.raises(IngestError) as caught:
            load_document(path, limits)
        return caught.value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_docx_bomb_is_refused_before_it_inflates(tmp_path):
    bomb = docx_bomb(tmp_path / "bomb.docx", inflated_mb=8)
    assert bomb.stat().st_size < 100_000  # 8 MB of XML in a file this small
    error, peak = refused(bomb, IngestLimits(max_entry_bytes=2 * MB))
    assert error.limit == "max_entry_bytes"
    assert "word/document.xml inflated size: 8.1 MB (limit max_entry_bytes = 2.0 MB)" in str(error)
    assert peak < 2 * MB  # refused from the zip directory: nothing was inflated


def test_docx_bomb_is_refused_by_its_compression_ratio(tmp_path):
    bomb = docx_bomb(tmp_path / "bomb.docx", inflated_mb=4)
    error, _ = refused(bomb)  # within the default size limits, but ~400:1
    assert error.limit == "max_ratio" and "word/document.xml compression ratio" in str(error)


def test_zip_with_too_many_entries_is_refused_from_its_end_record(tmp_path):
    crowded = docx_with_entries(tmp_path / "crowded.docx", 2_100)
    error, _ = refused(crowded)
    assert error.limit == "max_entries" and "zip entries: 2,1" in str(error)


@pytest.mark.parametrize("declared", [True, False], ids=["declared", "cells-only"])
def test_xlsx_reaching_column_16384_is_refused_without_padding_rows(tmp_path, declared):
    sheet = wide_xlsx(tmp_path / "wide.xlsx", declared=declared)
    assert sheet.stat().st_size < 8_000
    started = time.perf_counter()
    error, peak = refused(sheet)
    assert error.limit in (("max_columns",) if declared else ("max_rows", "max_columns"))
    assert ("declared columns: 16,384" in str(error)) if declared else ("limit max_" in str(error))
    assert time.perf_counter() - started < 10 and peak < 20 * MB  # rows are never padded to 16,384 cells


def test_xlsx_rows_are_read_without_the_declared_padding(tmp_path):
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.append(["question", "answer"])
    sheet.append(["When are you open?", "Weekdays 9 to 5."])
    sheet.cell(row=2, column=300, value="note")  # a wide but allowed row
    book.save(tmp_path / "faq.xlsx")
    doc = load_document(tmp_path / "faq.xlsx")
    assert doc.sections[0].text == "Q: When are you open?\nA: Weekdays 9 to 5."


def test_csv_rows_and_columns_are_counted_as_read(tmp_path):
    wide = tmp_path / "wide.csv"
    wide.write_text("question,answer," + ",".join(f"c{i}" for i in range(600)) + "\nq,a\n")
    error, _ = refused(wide)
    assert error.limit == "max_columns" and "row 1 width in columns: 602" in str(error)
    long = tmp_path / "long.csv"
    long.write_text("question,answer\n" + "".join(f"q{i},a{i}\n" for i in range(50)))
    error, _ = refused(long, IngestLimits(max_rows=20))
    assert error.limit == "max_rows" and "limit max_rows = 20" in str(error)


def test_pdf_pages_are_limited(tmp_path):
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for n in range(3):
        pdf.add_page()
        pdf.cell(0, 10, f"Page {n + 1} of the fee schedule.")
    pdf.output(str(tmp_path / "fees.pdf"))
    error, _ = refused(tmp_path / "fees.pdf", IngestLimits(max_pages=2))
    assert error.limit == "max_pages" and "PDF pages: 3 (limit max_pages = 2)" in str(error)
    assert len(load_document(tmp_path / "fees.pdf").sections) == 3


def test_markdown_heading_with_a_long_run_of_spaces_parses_in_linear_time(tmp_path):
    path = tmp_path / "notes.md"
    path.write_text("# Fees " + " " * 100_000 + "x\n\nbody text\n\n## Closing ##\n\nmore\n")
    started = time.perf_counter()
    doc = load_document(path)
    assert time.perf_counter() - started < 1.0  # the old pattern backtracked for ~10 s here
    assert doc.sections[1].headings[-1] == "Closing"


def test_limits_take_overrides_by_name():
    limits = IngestLimits.parse(["max_pages=5", "max_entry_bytes=2MB", "max-seconds=1.5"])
    assert (limits.max_pages, limits.max_entry_bytes, limits.max_seconds) == (5, 2 * MB, 1.5)
    with pytest.raises(ValueError, match="NAME one of max_file_bytes"):
        IngestLimits.parse(["pages=5"])
    with pytest.raises(ValueError, match="IngestLimits.max_rows must be a positive number"):
        IngestLimits(max_rows=0)
