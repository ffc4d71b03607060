"""Every supported format parses into titled sections; bad files fail with a one-line reason."""

from __future__ import annotations

import csv
import json

import pytest

from index.chunk import ChunkConfig, chunk_document, tokenizer_counter
from index.ingest import IngestError, load_document


def test_markdown_keeps_headings(tmp_path):
    path = tmp_path / "fees.md"
    path.write_text("# Fee schedule\n\nIntro.\n\n## Wires\n\nA domestic wire costs $25.\n", encoding="utf-8")
    doc = load_document(path)
    assert doc.title == "Fee schedule"
    wires = next(s for s in doc.sections if "$25" in s.text)
    assert wires.headings == ["Fee schedule", "Wires"]


def test_html_visible_text_only(tmp_path):
    path = tmp_path / "page.html"
    path.write_text(
        "<html><head><title>Visiting</title><script>var secret='hidden-js';</script></head><body>"
        "<nav>Home | About</nav><main><h1>Visiting hours</h1><p>General wards: 8 a.m. to 8 p.m.</p>"
        "<table><tr><th>Unit</th><th>Hours</th></tr><tr><td>ICU</td><td>24 hours</td></tr></table></main>"
        "<footer>Copyright</footer></body></html>", encoding="utf-8")
    doc = load_document(path)
    assert doc.title == "Visiting hours"
    assert "8 a.m. to 8 p.m." in doc.text and "ICU | 24 hours" in doc.text
    assert "hidden-js" not in doc.text and "Copyright" not in doc.text and "About" not in doc.text


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16", "cp1252"])
def test_text_encodings(tmp_path, encoding):
    path = tmp_path / "notice.txt"
    path.write_text("Café opening hours\n\nThe café in the lobby opens at 7:00.", encoding=encoding)
    assert "café in the lobby" in load_document(path).text


def test_chinese_text_and_sentence_chunks(tmp_path, embedder):
    path = tmp_path / "zh.txt"
    path.write_text("银行营业时间。" + "我们的分行周一至周五上午九点营业。" * 30 + "周六休息！", encoding="gb18030")
    doc = load_document(path)
    assert "营业时间" in doc.text
    chunks = chunk_document(doc, tokenizer_counter(embedder.tokenizer), ChunkConfig(chunk_size=64, chunk_overlap=8))
    assert len(chunks) > 1
    assert all(c.text.endswith(("。", "！")) for c in chunks)  # cut at sentence ends


def test_pdf_pages(tmp_path):
    from fpdf import FPDF

    pdf = FPDF()
    for page_text in ("Fee schedule page one: wires cost $25.", "Page two: overdraft fee is $32."):
        pdf.add_page()
        pdf.set_font("Helvetica", size=12)
        pdf.multi_cell(0, 8, page_text)
    path = tmp_path / "fees.pdf"
    pdf.output(str(path))
    doc = load_document(path)
    assert [s.page for s in doc.sections] == [1, 2]
    assert "$32" in doc.sections[1].text


def test_docx_headings(tmp_path):
    import docx

    document = docx.Document()
    document.add_heading("Privacy notice", level=1)
    document.add_heading("Records requests", level=2)
    document.add_paragraph("Copies are ready within 30 days.")
    path = tmp_path / "privacy.docx"
    document.save(str(path))
    doc = load_document(path)
    section = next(s for s in doc.sections if "30 days" in s.text)
    assert section.headings == ["Privacy notice", "Records requests"]


def test_csv_faq_one_section_per_row(tmp_path):
    path = tmp_path / "faq.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["question", "answer"])
        writer.writerow(["How do I reset my password?", "Use 'Forgot password', then follow the e-mail link."])
        writer.writerow(["Is there a fee, for wires?", "Yes, $25 for domestic wires."])
    doc = load_document(path)
    assert len(doc.sections) == 2
    assert doc.sections[1].headings == ["Is there a fee, for wires?"]


def test_xlsx_faq_reads_every_sheet_with_qa_columns(tmp_path):
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "Cards"
    sheet.append(["Question", "Answer", "Owner"])
    sheet.append(["How do I freeze my card?", "Open the app and tap Freeze card.", "cards team"])
    sheet.append([None, None, None])
    sheet.append(["What is the daily ATM limit?", 500, "cards team"])
    notes = book.create_sheet("Notes")
    notes.append(["misc"])
    notes.append(["not a FAQ"])
    path = tmp_path / "faq.xlsx"
    book.save(path)
    doc = load_document(path)
    assert [s.headings for s in doc.sections] == [["How do I freeze my card?"], ["What is the daily ATM limit?"]]
    assert doc.sections[1].text.endswith("A: 500")
    bad = tmp_path / "bad.xlsx"
    bad.write_bytes(b"PK\x03\x04 not really a workbook")
    with pytest.raises(IngestError, match="could not parse .xlsx"):
        load_document(bad)


def test_jsonl_records(tmp_path):
    path = tmp_path / "notes.jsonl"
    path.write_text(json.dumps({"title": "Parking", "text": "Parking is $2 per hour."}) + "\n", encoding="utf-8")
    assert load_document(path).sections[0].headings == ["Parking"]


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.md", b"", "empty file"),
        ("blank.txt", b"   \n\n", "empty file"),
        ("binary.txt", b"\x00\x01\x02\xffELF\x00" * 50, "binary content"),
        ("broken.pdf", b"%PDF-1.4 this is not really a pdf", "PDF"),
        ("faq.csv", b"foo,bar\n1,2\n", "question and answer columns"),
        ("bad.jsonl", b'{"text": "ok"}\n{not json\n', "invalid JSON on line 2"),
        ("image.png", b"\x89PNG\r\n", "unsupported file type"),
    ],
)
def test_bad_files_give_reason(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(IngestError, match=reason):
        load_document(path)


def test_image_only_pdf_is_reported(tmp_path):
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.rect(10, 10, 50, 50, style="F")  # drawing, no text layer
    path = tmp_path / "scan.pdf"
    pdf.output(str(path))
    with pytest.raises(IngestError, match="no text layer"):
        load_document(path)


def test_chunks_respect_size_and_keep_offsets(tmp_path, embedder):
    path = tmp_path / "long.md"
    body = " ".join(f"Sentence number {i} explains a policy detail." for i in range(120))
    path.write_text(f"# Policy\n\n{body}\n", encoding="utf-8")
    doc = load_document(path)
    count = tokenizer_counter(embedder.tokenizer)
    chunks = chunk_document(doc, count, ChunkConfig(chunk_size=60, chunk_overlap=12))
    assert len(chunks) > 5
    assert max(count([c.text])[0] for c in chunks) <= 60
    for chunk in chunks:
        assert doc.text[chunk.start:chunk.end] == chunk.text
        assert chunk.headings == ["Policy"]
    # neighbours overlap: the next chunk starts before the previous one ends
    assert chunks[1].start < chunks[0].end


def test_chunks_start_where_a_sentence_or_a_table_row_starts(tmp_path, embedder):
    """"9:00 a.m. to 5:00 p.m." is one sentence, and a table too long for one chunk is cut between rows: no
    chunk starts with "to 5:00 p.m." or in the middle of a row (such a chunk's first line became evidence)."""
    hours = " ".join(f"Branch {i} is open Monday to Friday 9:00 a.m. to 5:00 p.m. and Saturday 9:00 a.m. to "
                     f"1:00 p.m. on most weeks." for i in range(30))
    rows = "\n".join(f"<tr><td>Unit {i}</td><td>Floor {i}</td><td>9:00 a.m. to 8:00 p.m. daily</td>"
                     f"<td>{i % 4 + 1} at a time</td></tr>" for i in range(40))
    path = tmp_path / "hours.html"
    path.write_text(f"<h1>Hours</h1><p>{hours}</p><h2>By unit</h2><table>{rows}</table>", encoding="utf-8")
    doc = load_document(path)
    count = tokenizer_counter(embedder.tokenizer)
    chunks = chunk_document(doc, count, ChunkConfig(chunk_size=60, chunk_overlap=12))
    assert len(chunks) > 8 and max(count([c.text])[0] for c in chunks) <= 60
    for chunk in chunks:
        assert chunk.text[0].isupper(), chunk.text[:40]  # "Branch …", "Unit …": never "to 5:00 p.m."
        assert chunk.text.split("\n")[-1].endswith((".", "at a time")), chunk.text[-40:]
