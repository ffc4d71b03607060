"""Read documents (.txt .md .html .pdf .docx .csv .xlsx .jsonl) into titled sections with page numbers.

Every parser counts what it reads against `IngestLimits` (index/limits.py) as it goes, so a hostile
file (a zip bomb, a sheet declaring 16,384 columns, a PDF of 100,000 pages) is refused with the limit
it crossed instead of being loaded. Uploads are also parsed in a child process (index/sandbox.py).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from index.errors import UserError
from index.limits import Budget, IngestLimits, LimitExceeded, check_zip

# Bump when a reader cuts documents differently: an index whose files an older reader cut reads them again
# on its next build instead of reusing their chunks (an index from before this number was kept counts as 0)
READER_VERSION = 2  # 2: chunks no longer end inside "9:00 a.m. to 5:00 p.m." or a table row
SUPPORTED_SUFFIXES = {".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx", ".csv", ".xlsx", ".jsonl"}
MAX_FILE_BYTES = IngestLimits.max_file_bytes


class IngestError(UserError, ValueError):
    """A file that cannot be indexed; the message is the one-line reason shown in the build summary.

    `limit` names the IngestLimits field a refused file crossed (None for other reasons).
    """

    def __init__(self, message: str, limit: str | None = None):
        super().__init__(message)
        self.limit = limit


@dataclass
class Section:
    """A run of text under one heading path (and on one page for PDFs)."""

    text: str
    headings: list[str] = field(default_factory=list)
    page: int | None = None


@dataclass
class Document:
    source: str
    title: str
    sections: list[Section]

    @property
    def text(self) -> str:
        return "\n\n".join(s.text for s in self.sections)


def iter_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Files under the given paths, recursively, in a stable order; hidden files are left out."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                rel = child.relative_to(path)
                if child.is_file() and not any(p.startswith(".") for p in rel.parts):
                    yield child
        else:
            yield path


def read_text_file(path: Path) -> str:
    """Decode a text file whatever its encoding; binary content is an IngestError."""
    data = path.read_bytes()  # at most max_file_bytes: load_document checked the size
    if not data.strip():
        raise IngestError("empty file")
    if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise IngestError("binary content in a text file")
    for bom, codec in ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
        if data.startswith(bom):
            return data.decode(codec)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise IngestError("undecodable text (no encoding fits)")
    return str(best)


def load_document(path: str | Path, limits: IngestLimits | None = None) -> Document:
    """Parse one file by its suffix, within `limits` (the defaults when None).

    Raises IngestError with a one-line reason when it cannot; for a limit crossed, the reason names the
    limit and the value found, and `IngestError.limit` the field.
    """
    path = Path(path)
    limits = limits or IngestLimits()
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise IngestError(f"unsupported file type '{suffix or path.name}'")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise IngestError(f"unreadable: {exc.strerror}") from exc
    if size == 0:
        raise IngestError("empty file")
    if size > limits.max_file_bytes:
        raise IngestError(f"too large: {size / 2**20:.1f} MB on disk (limit {limits.describe('max_file_bytes')})",
                          limit="max_file_bytes")
    budget = Budget(limits)
    try:
        parser = PARSERS[suffix]
        sections, title = parser(path, budget)
        budget.tick()
    except LimitExceeded as exc:
        raise IngestError(f"refused: {exc}", limit=exc.limit) from exc
    except IngestError:
        raise
    except MemoryError:  # under index/sandbox.py's address-space cap (in process: the machine ran out)
        raise IngestError(f"refused: parsing needed more memory than allowed (limit "
                          f"{limits.describe('max_memory_bytes')})", limit="max_memory_bytes") from None
    except PermissionError as exc:
        raise IngestError(f"unreadable: {exc.strerror}") from exc
    except Exception as exc:  # a parser library's own error on a malformed file
        raise IngestError(f"could not parse {suffix} file: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
    sections = [s for s in sections if s.text.strip()]
    if not sections:
        raise IngestError("no extractable text")
    return Document(source=str(path), title=title or _title_from_name(path), sections=sections)


def _title_from_name(path: Path) -> str:
    return re.sub(r"[_\-]+", " ", path.stem).strip().capitalize()


def parse_text(path: Path, budget: Budget) -> tuple[list[Section], str | None]:
    text = read_text_file(path)
    budget.text(len(text))
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    title = first if 0 < len(first) <= 120 else None
    return [Section(text=text.strip())], title


# The heading text is trimmed in Python (_heading_text): a pattern like `(.+?)\s*#*\s*$` backtracks
# quadratically on a long line of spaces, ~10 s of held GIL for one 100 KB line.
_MD_HEADING = re.compile(r"^(#{1,6})[ \t]+(\S.*)$")


def _heading_text(raw: str) -> str:
    """A markdown heading without its optional closing run of '#' (which must follow a space)."""
    text = raw.rstrip()
    bare = text.rstrip("#")
    if bare != text and (not bare or bare[-1] in " \t"):
        text = bare.rstrip()
    return text


def parse_markdown(path: Path, budget: Budget) -> tuple[list[Section], str | None]:
    text = read_text_file(path)
    budget.text(len(text))
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    buf: list[str] = []
    title = None
    in_code = False

    def flush() -> None:
        body = "\n".join(buf).strip()
        if body:
            sections.append(Section(text=body, headings=[h for _, h in stack]))
        buf.clear()

    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        match = None if in_code else _MD_HEADING.match(line)
        if match:
            flush()
            level, heading = len(match.group(1)), _heading_text(match.group(2))
            if title is None and level == 1:
                title = heading
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, heading))
        else:
            buf.append(line)
    flush()
    return sections, title


_HTML_DROP = ["script", "style", "noscript", "template", "nav", "footer", "header", "aside", "form", "svg"]
_HTML_BLOCKS = ["p", "li", "td", "th", "dd", "dt", "pre", "blockquote", "figcaption", "caption"]


def parse_html(path: Path, budget: Budget) -> tuple[list[Section], str | None]:
    from bs4 import BeautifulSoup

    text = read_text_file(path)
    budget.text(len(text))  # the visible text is a part of the markup
    soup = BeautifulSoup(text, "html.parser")
    budget.tick()
    title = soup.title.get_text(" ", strip=True) if soup.title else None
    for tag in soup(_HTML_DROP):
        tag.decompose()
    root = soup.find("main") or soup.find("article") or soup.body or soup
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    buf: list[str] = []

    def flush() -> None:
        body = "\n".join(buf).strip()
        if body:
            sections.append(Section(text=body, headings=[h for _, h in stack]))
        buf.clear()

    for el in root.find_all(["h1", "h2", "h3", "h4", "h5", "h6", "tr", *_HTML_BLOCKS]):
        if el.name[0] == "h" and el.name[1:].isdigit():
            flush()
            level = int(el.name[1])
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, el.get_text(" ", strip=True)))
        elif el.name == "tr":
            cells = [c.get_text(" ", strip=True) for c in el.find_all(["td", "th"])]
            if any(cells):
                buf.append(" | ".join(cells))
        elif el.find_parent(["tr", "li"]) is None or el.name == "li":
            if el.name == "li" and el.find_parent("li") is not None:
                continue
            text = el.get_text(" ", strip=True)
            if text:
                buf.append(("- " if el.name == "li" else "") + text)
    flush()
    if not sections:  # pages without block tags: keep the visible text
        text = root.get_text("\n", strip=True)
        sections = [Section(text=text)] if text else []
    if title is None and stack:
        title = stack[0][1]
    h1 = root.find("h1")
    if h1 is not None and h1.get_text(strip=True):
        title = h1.get_text(" ", strip=True)
    return sections, title


def parse_pdf(path: Path, budget: Budget) -> tuple[list[Section], str | None]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
    except PdfReadError as exc:
        raise IngestError(f"corrupt PDF: {exc}") from exc
    if reader.is_encrypted:
        try:
            if not reader.decrypt(""):
                raise IngestError("encrypted PDF (password required)")
        except Exception as exc:
            raise IngestError("encrypted PDF (password required)") from exc
    pages = len(reader.pages)
    if pages > budget.limits.max_pages:
        raise LimitExceeded(budget.limits, "max_pages", "PDF pages", pages)
    sections = []
    for number, page in enumerate(reader.pages, start=1):
        budget.tick()
        text = (page.extract_text() or "").strip()
        budget.text(len(text))
        if text:
            sections.append(Section(text=text, page=number))
    if not sections:
        raise IngestError("PDF has no text layer (scanned or image-only; run OCR first)")
    meta_title = None
    try:
        meta_title = reader.metadata.title if reader.metadata else None
    except Exception:  # broken metadata does not stop the text from being indexed
        meta_title = None
    first_line = sections[0].text.splitlines()[0].strip()
    return sections, meta_title or (first_line if len(first_line) <= 120 else None)


def parse_docx(path: Path, budget: Budget) -> tuple[list[Section], str | None]:
    import docx

    check_zip(path, budget)  # python-docx inflates whole parts: only once they are known to fit
    document = docx.Document(str(path))
    budget.tick()
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    buf: list[str] = []
    title = document.core_properties.title or None

    def flush() -> None:
        body = "\n".join(buf).strip()
        if body:
            sections.append(Section(text=body, headings=[h for _, h in stack]))
        buf.clear()

    for para in document.paragraphs:
        style = (para.style.name or "") if para.style is not None else ""
        text = para.text.strip()
        budget.text(len(text))
        if not text:
            continue
        if style == "Title" or style.startswith("Heading"):
            flush()
            level = 0 if style == "Title" else int(style.split()[-1]) if style.split()[-1].isdigit() else 1
            if title is None and level <= 1:
                title = text
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, text))
        else:
            buf.append(text)
    for table in document.tables:
        for row in table.rows:
            cells = [c.text.strip() for c in row.cells]
            budget.row(len(cells))
            budget.text(sum(map(len, cells)))
            if any(cells):
                buf.append(" | ".join(cells))
    flush()
    return sections, title


_Q_COLUMNS = ("question", "q", "query", "prompt", "title")
_A_COLUMNS = ("answer", "a", "response", "reply", "content", "text")


def _faq_sections(header: list[str], rows: Iterable[list[str]], budget: Budget) -> list[Section]:
    """One section per question/answer row, the question as its heading (rows are read as they come)."""
    fields = {(f or "").strip().lower(): i for i, f in enumerate(header)}
    q_col = next((fields[c] for c in _Q_COLUMNS if c in fields), None)
    a_col = next((fields[c] for c in _A_COLUMNS if c in fields), None)
    if q_col is None or a_col is None:
        found = ", ".join(f for f in fields if f) or "none"
        raise IngestError(f"FAQ table needs question and answer columns (found: {found})")
    def cell(row: list, i: int) -> str:
        return str(row[i]).strip() if i < len(row) and row[i] is not None else ""

    sections = []
    for row in rows:
        question, answer = cell(row, q_col), cell(row, a_col)
        budget.text(len(question) + len(answer))
        if question and answer:
            sections.append(Section(text=f"Q: {question}\nA: {answer}", headings=[question]))
    return sections


def _counted(rows: Iterable[list], budget: Budget) -> Iterator[list]:
    for row in rows:
        budget.row(len(row))
        yield row


def parse_csv(path: Path, budget: Budget) -> tuple[list[Section], str | None]:
    """A question/answer FAQ in CSV (comma, semicolon or tab separated)."""
    text = read_text_file(path)
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    rows = _counted(csv.reader(io.StringIO(text), dialect=dialect), budget)
    header = next(rows, None)
    if header is None:
        raise IngestError("empty file")
    return _faq_sections(header, rows, budget), None


def parse_xlsx(path: Path, budget: Budget) -> tuple[list[Section], str | None]:
    """A question/answer FAQ in an Excel workbook: every sheet with question and answer columns.

    Rows are read one at a time and only as wide as their last cell: openpyxl pads every row to the
    sheet's declared width, so a 1.6 KB file declaring A1:XFD1048576 would otherwise fill the memory.
    """
    from openpyxl import load_workbook

    check_zip(path, budget)
    workbook = load_workbook(path, read_only=True, data_only=True)
    sections: list[Section] = []
    errors = []
    try:
        for sheet in workbook.worksheets:
            budget.declared_table(sheet.title, sheet.max_row, sheet.max_column)
            sheet.reset_dimensions()
            rows = (r for r in _counted(sheet.iter_rows(values_only=True), budget)
                    if any(v not in (None, "") for v in r))
            header = next(rows, None)
            if header is None:
                continue
            try:
                sections += _faq_sections([str(v or "") for v in header], rows, budget)
            except IngestError as exc:
                errors.append(f"sheet '{sheet.title}': {exc}")
    finally:
        workbook.close()
    if not sections and errors:
        raise IngestError(errors[0])
    return sections, None


def parse_jsonl(path: Path, budget: Budget) -> tuple[list[Section], str | None]:
    """One record per line: `text` (or question/answer), optional `title`."""
    sections = []
    for number, line in enumerate(read_text_file(path).splitlines(), start=1):
        if not line.strip():
            continue
        budget.text(len(line))
        if number % 1024 == 0:
            budget.tick()
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise IngestError(f"invalid JSON on line {number}: {exc.msg}") from exc
        if not isinstance(record, dict):
            raise IngestError(f"line {number} is not a JSON object")
        if "question" in record and "answer" in record:
            text = f"Q: {record['question']}\nA: {record['answer']}"
            headings = [str(record["question"])]
        else:
            text = str(record.get("text") or record.get("content") or "")
            headings = [str(record["title"])] if record.get("title") else []
        if text.strip():
            sections.append(Section(text=text, headings=headings))
    return sections, None


PARSERS = {
    ".txt": parse_text,
    ".md": parse_markdown,
    ".markdown": parse_markdown,
    ".html": parse_html,
    ".htm": parse_html,
    ".pdf": parse_pdf,
    ".docx": parse_docx,
    ".csv": parse_csv,
    ".xlsx": parse_xlsx,
    ".jsonl": parse_jsonl,
}
