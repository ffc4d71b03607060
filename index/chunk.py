"""Token-aware chunking that respects headings, paragraphs and sentences (Latin and CJK punctuation)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from index.errors import SettingError
from index.ingest import Document

# A sentence ends at . ! ? followed by space, or at CJK 。！？ (which need no space).
# a sentence ends at . ! ? and a space, unless what follows goes on with it: "9:00 a.m. to 5:00 p.m.", "Dr. smith",
# or the next cell of a table row ("8:00 p.m. | 2 at a time")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?![\sa-z|])|(?<=[。！？])")
_PARAGRAPH = re.compile(r"\n\s*\n")

TokenCounter = Callable[[Sequence[str]], list[int]]


@dataclass
class ChunkConfig:
    chunk_size: int = 200
    chunk_overlap: int = 40

    def __post_init__(self) -> None:
        if self.chunk_size < 16:
            raise SettingError(f"--chunk-size must be at least 16 tokens (got {self.chunk_size})")
        if not 0 <= self.chunk_overlap < self.chunk_size:
            raise SettingError(
                f"--chunk-overlap must be between 0 and --chunk-size - 1 (got {self.chunk_overlap})"
            )


@dataclass
class Chunk:
    text: str
    source: str
    title: str
    headings: list[str] = field(default_factory=list)
    page: int | None = None
    start: int = 0  # character offsets into Document.text
    end: int = 0
    file_hash: str = ""

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def chunk_id(self) -> str:
        key = f"{self.source}\x00{self.start}\x00{self.end}\x00{self.content_hash}"
        return hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]

    @property
    def embed_text(self) -> str:
        """What gets embedded: the title and heading path give a short chunk its context."""
        context = " > ".join([self.title, *[h for h in self.headings if h != self.title]])
        return f"{context}\n{self.text}" if context else self.text


def _units(text: str, base: int) -> list[tuple[int, int]]:
    """Paragraph spans, with paragraphs split further into sentence spans, as absolute offsets."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for match in [*_PARAGRAPH.finditer(text), None]:
        end = match.start() if match else len(text)
        para_start = pos
        cursor = para_start
        for sentence in _SENTENCE_END.finditer(text, para_start, end):
            if sentence.start() > cursor:
                spans.append((cursor, sentence.start()))
            cursor = sentence.end()
        if end > cursor:
            spans.append((cursor, end))
        spans.append((-1, -1))  # paragraph boundary marker
        pos = match.end() if match else len(text)
    out = []
    for s, e in spans:
        if s < 0:
            out.append((-1, -1))
            continue
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            out.append((base + s, base + e))
    return out


def _split_long(text: str, start: int, end: int, tokens: int, limit: int) -> list[tuple[int, int]]:
    """Cut a unit longer than the limit at a line break (a table keeps its rows whole), else at whitespace (or
    anywhere, for unspaced scripts)."""
    pieces = max(2, -(-tokens // limit))
    step = -(-(end - start) // pieces)
    spans, s = [], start
    while s < end:
        e = min(end, s + step)
        if e < end:
            line = text.rfind("\n", s + step // 2, e)
            space = line if line > s else text.rfind(" ", s + step // 2, e)
            e = space if space > s else e
        spans.append((s, e))
        s = e
        while s < end and text[s].isspace():
            s += 1
    return spans


def chunk_document(
    doc: Document, count_tokens: TokenCounter, config: ChunkConfig, file_hash: str = ""
) -> list[Chunk]:
    """Pack sentences into chunks of at most chunk_size tokens; a new section always starts a chunk."""
    full = doc.text
    chunks: list[Chunk] = []
    offset = 0
    for section in doc.sections:
        base = full.index(section.text, offset)
        offset = base + len(section.text)
        spans = [s for s in _units(section.text, base) if s[0] >= 0]
        counts = count_tokens([full[s:e] for s, e in spans])
        units: list[tuple[int, int, int]] = []
        for (s, e), n in zip(spans, counts, strict=True):
            if n > config.chunk_size:
                parts = _split_long(full, s, e, n, config.chunk_size)
                units += [(ps, pe, n) for (ps, pe), n in zip(parts, count_tokens([full[a:b] for a, b in parts]), strict=True)]
            else:
                units.append((s, e, n))
        groups: list[list[tuple[int, int, int]]] = []
        current: list[tuple[int, int, int]] = []
        total = 0

        for unit in units:
            if current and total + unit[2] > config.chunk_size:
                groups.append(current)
                keep: list[tuple[int, int, int]] = []
                kept = 0
                for prev in reversed(current):
                    if kept + prev[2] > config.chunk_overlap or kept + prev[2] + unit[2] > config.chunk_size:
                        break
                    keep.insert(0, prev)
                    kept += prev[2]
                current, total = keep, kept
            current.append(unit)
            total += unit[2]
        if current:
            groups.append(current)
        for group in groups:
            s, e = group[0][0], group[-1][1]
            chunks.append(Chunk(text=full[s:e], source=doc.source, title=doc.title,
                                headings=list(section.headings), page=section.page,
                                start=s, end=e, file_hash=file_hash))
    return chunks


def tokenizer_counter(tokenizer) -> TokenCounter:
    """Batch token counter for a Hugging Face tokenizer (special tokens excluded)."""

    def count(texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        # counting only: long texts are fine here, so skip the "longer than max length" warning
        encoded = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
        return [len(ids) for ids in encoded]

    return count
