"""What one file may cost to read, counted while it is read: a hostile file is refused, never loaded.

    from index.limits import IngestLimits
    limits = IngestLimits(max_pages=500)                 # or IngestLimits.parse(["max_pages=500"])
    doc = load_document(path, limits)                      # index/ingest.py: IngestError names the limit

Zip containers (.docx, .xlsx) are checked before any parser opens them: the number of entries from
the end-of-directory record (the directory itself is not read past the limit), then every member's
declared size and compression ratio, then every member inflated in 64 KiB pieces and counted, so a
member that inflates past a limit is stopped at that point with the bytes seen so far in memory.
Rows, columns, pages, extracted text and time are counted by the parsers as they go (`Budget`).
Memory is bounded by these limits in process; `index/sandbox.py` adds a hard cap for uploads.
"""

from __future__ import annotations

import struct
import time
import zipfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from index.errors import SettingError, UserError

MB = 2**20
_CHUNK = 64 * 1024
# Below this many inflated bytes a member cannot hurt whatever its ratio (XML styles compress ~50x).
_RATIO_FLOOR = 1 * MB
_ALL_MEMBERS = "inflated size of all zip members"


@dataclass(frozen=True)
class IngestLimits:
    """Per-file limits on what parsing may use. Sizes in bytes; override any field by name."""

    max_file_bytes: int = 50 * MB  # size on disk (what the upload sends)
    max_entry_bytes: int = 100 * MB  # one zip member (.docx, .xlsx), inflated
    max_total_bytes: int = 250 * MB  # all zip members together, inflated
    max_entries: int = 2_000  # members of a zip container
    max_ratio: float = 200.0  # inflated / compressed size of a member (a zip bomb reaches ~1,000)
    max_pages: int = 2_000  # PDF pages
    max_rows: int = 200_000  # table rows (.csv, .xlsx: all sheets together)
    max_columns: int = 512  # table columns, declared or used
    max_cells: int = 4_000_000  # table cells read (rows x columns)
    max_text_chars: int = 20_000_000  # extracted text (~10,000 pages)
    max_seconds: float = 120.0  # parse time per file
    max_memory_bytes: int = 2048 * MB  # isolated parsing (index/sandbox.py): address space above its start

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise SettingError(f"IngestLimits.{f.name} must be a positive number (got {value!r})")

    @classmethod
    def parse(cls, overrides: list[str] | None, base: IngestLimits | None = None) -> IngestLimits:
        """Limits from `NAME=VALUE` strings (the CLI's `--limit`); sizes may end in KB, MB or GB."""
        values = asdict(base or cls())
        names = {f.name: f.type for f in fields(cls)}
        for item in overrides or []:
            name, sep, raw = item.partition("=")
            name = name.strip().replace("-", "_")
            if not sep or name not in names:
                raise SettingError(f"--limit takes NAME=VALUE with NAME one of {', '.join(names)} (got {item!r})")
            values[name] = _number(raw.strip(), name, names[name])
        return cls(**values)

    def describe(self, name: str, value: float | None = None) -> str:
        """`name = value` in the unit the limit uses (MB for sizes)."""
        value = getattr(self, name) if value is None else value
        return f"{name} = {_show(name, value)}"


def _number(raw: str, name: str, kind: str) -> int | float:
    scale = 1
    for suffix, factor in (("KB", 2**10), ("MB", MB), ("GB", 2**30)):
        if raw.upper().endswith(suffix):
            raw, scale = raw[: -len(suffix)].strip(), factor
    try:
        value = float(raw) * scale
    except ValueError:
        raise SettingError(f"--limit {name}: {raw!r} is not a number") from None
    return value if "float" in str(kind) else int(value)


def _show(name: str, value: float) -> str:
    if name.endswith("_bytes"):
        return f"{value / MB:.1f} MB"
    if name == "max_seconds":
        return f"{value:g} s"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:g}"


class LimitExceeded(UserError, ValueError):
    """A file crossed one of its IngestLimits; `limit` names the field, the message gives the value."""

    def __init__(self, limits: IngestLimits, limit: str, what: str, value: float, *, at_least: bool = False):
        self.limit, self.value = limit, value
        shown = ("more than " if at_least else "") + _show(limit, value)
        super().__init__(f"{what}: {shown} (limit {limits.describe(limit)})")


class Budget:
    """What one file has used so far; each count is checked against its limit as it grows."""

    def __init__(self, limits: IngestLimits):
        self.limits = limits
        self.started = time.monotonic()
        self.chars = self.rows = self.cells = 0

    def tick(self) -> None:
        """Raise once the parse has run past max_seconds (called between pages, rows, pieces)."""
        elapsed = time.monotonic() - self.started
        if elapsed > self.limits.max_seconds:
            raise LimitExceeded(self.limits, "max_seconds", "parse time", elapsed, at_least=True)

    def text(self, n: int) -> None:
        self.chars += n
        if self.chars > self.limits.max_text_chars:
            raise LimitExceeded(self.limits, "max_text_chars", "extracted text", self.chars, at_least=True)

    def row(self, width: int) -> None:
        """One table row of `width` cells (declared or read)."""
        self.rows += 1
        self.cells += width
        if width > self.limits.max_columns:
            raise LimitExceeded(self.limits, "max_columns", f"row {self.rows} width in columns", width)
        if self.rows > self.limits.max_rows:
            raise LimitExceeded(self.limits, "max_rows", "table rows", self.rows, at_least=True)
        if self.cells > self.limits.max_cells:
            raise LimitExceeded(self.limits, "max_cells", "table cells", self.cells, at_least=True)
        if self.rows % 1024 == 0:
            self.tick()

    def declared_table(self, sheet: str, rows: int | None, columns: int | None) -> None:
        """A sheet's declared size (xlsx <dimension>): refused before any row is read."""
        lim = self.limits
        if columns and columns > lim.max_columns:
            raise LimitExceeded(lim, "max_columns", f"sheet '{sheet}' declared columns", columns)
        if rows and rows > lim.max_rows:
            raise LimitExceeded(lim, "max_rows", f"sheet '{sheet}' declared rows", rows)
        if rows and columns and rows * columns > lim.max_cells:
            raise LimitExceeded(lim, "max_cells", f"sheet '{sheet}' declared cells ({rows:,} x {columns:,})",
                                rows * columns)


def zip_entry_count(path: Path) -> int:
    """Members a zip declares in its end-of-central-directory record (zip64 too), without reading the
    directory itself. Raises zipfile.BadZipFile when there is no such record."""
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        tail_len = min(size, 22 + 65_535)  # the record plus the longest comment
        fh.seek(size - tail_len)
        tail = fh.read(tail_len)
        pos = tail.rfind(b"PK\x05\x06")
        if pos < 0 or pos + 22 > len(tail):
            raise zipfile.BadZipFile("not a zip container (no end-of-directory record)")
        (entries,) = struct.unpack("<H", tail[pos + 10:pos + 12])
        if entries != 0xFFFF or pos < 20 or tail[pos - 20:pos - 16] != b"PK\x06\x07":
            return entries
        (offset,) = struct.unpack("<Q", tail[pos - 12:pos - 4])  # the zip64 record's place in the file
        fh.seek(offset)
        record = fh.read(56)
        if record[:4] != b"PK\x06\x06" or len(record) < 40:
            raise zipfile.BadZipFile("damaged zip64 end-of-directory record")
        (entries,) = struct.unpack("<Q", record[32:40])
        return entries


def check_zip(path: Path, budget: Budget) -> None:
    """Refuse a zip container that would inflate past the limits; reads members in bounded pieces."""
    lim = budget.limits
    count = zip_entry_count(path)
    if count > lim.max_entries:
        raise LimitExceeded(lim, "max_entries", "zip entries", count)
    with zipfile.ZipFile(path) as archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) > lim.max_entries:
            raise LimitExceeded(lim, "max_entries", "zip entries", len(members))
        for m in members:
            _check_member(lim, m, m.file_size, at_least=False)
        declared = sum(m.file_size for m in members)
        if declared > lim.max_total_bytes:
            raise LimitExceeded(lim, "max_total_bytes", _ALL_MEMBERS, declared)
        total = 0
        for m in members:
            seen = 0
            with archive.open(m) as member:
                while piece := member.read(_CHUNK):
                    seen += len(piece)
                    total += len(piece)
                    _check_member(lim, m, seen, at_least=True)
                    if total > lim.max_total_bytes:
                        raise LimitExceeded(lim, "max_total_bytes", _ALL_MEMBERS, total, at_least=True)
                    budget.tick()


def _check_member(lim: IngestLimits, member: zipfile.ZipInfo, size: int, *, at_least: bool) -> None:
    if size > lim.max_entry_bytes:
        raise LimitExceeded(lim, "max_entry_bytes", f"{member.filename} inflated size", size, at_least=at_least)
    if size > _RATIO_FLOOR and size > lim.max_ratio * max(member.compress_size, 1):
        ratio = size / max(member.compress_size, 1)
        raise LimitExceeded(lim, "max_ratio", f"{member.filename} compression ratio", round(ratio),
                            at_least=at_least)
