"""The pack's glossary: the everyday words customers use for the institution's own terms.

A customer asks about "the childrens floor" or "the ABA number"; the documents say *Pediatrics* and *routing
number*. `glossary.csv` in a pack (header `term,also`: the term as the documents write it, then the everyday
words for it separated by `|`) lets the search and the evidence selection meet both: a message that uses an
everyday word and not the term is searched with the term added ("... on the childrens floor (pediatrics)").

    term,also
    pediatrics,children's|childrens|kids floor
    routing number,aba number|aba
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from index.errors import SettingError

MAX_ROWS = 5_000


def _normal(text: str) -> str:
    return " ".join(text.lower().replace("\u2019", "'").replace("\u2018", "'").split())


def _phrase(text: str) -> re.Pattern:
    words = [re.escape(w) for w in _normal(text).split()]
    return re.compile(r"(?<![\w'])" + r"[\s-]+".join(words) + r"(?![\w'])")


@dataclass(frozen=True)
class Glossary:
    """Institution terms with the everyday words for each (empty: no pack glossary)."""

    entries: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __post_init__(self) -> None:
        compiled = [(term, _phrase(term), tuple(_phrase(a) for a in also)) for term, also in self.entries]
        object.__setattr__(self, "_compiled", compiled)

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def read(cls, path: str | Path) -> Glossary:
        """The glossary in a `term,also` CSV file; a missing file is an empty glossary. A malformed one is an
        error naming the line to fix (nothing is half-loaded)."""
        path = Path(path)
        if not path.exists():
            return cls()
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise SettingError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from exc
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, where: str = "glossary") -> Glossary:
        rows = list(csv.reader(io.StringIO(text)))
        if not rows or [c.strip().lower() for c in rows[0]] != ["term", "also"]:
            raise SettingError(f"{where}: the first line must be the header `term,also`")
        if len(rows) > MAX_ROWS + 1:
            raise SettingError(f"{where}: {len(rows) - 1} rows; at most {MAX_ROWS} are read")
        entries: list[tuple[str, tuple[str, ...]]] = []
        for line, row in enumerate(rows[1:], start=2):
            if not any(c.strip() for c in row):
                continue
            if len(row) != 2:
                raise SettingError(f"{where}, line {line}: expected two columns (term, also), found {len(row)}; "
                                   "separate the everyday words with | inside the second column")
            term = _normal(row[0])
            also = tuple(dict.fromkeys(a for a in (_normal(x) for x in row[1].split("|")) if a and a != term))
            if not term or not also:
                raise SettingError(f"{where}, line {line}: a term and at least one other word for it are needed")
            entries.append((term, also))
        return cls(tuple(entries))

    def terms_for(self, text: str) -> list[str]:
        """The institution terms whose everyday words `text` uses while it does not name the term itself."""
        low = _normal(text)
        found: list[str] = []
        for term, pattern, also in self._compiled:  # type: ignore[attr-defined]
            if term not in found and not pattern.search(low) and any(a.search(low) for a in also):
                found.append(term)
        return found

    def expand(self, text: str) -> str:
        """`text` with the terms it means but does not name added in brackets (unchanged when there are none)."""
        found = self.terms_for(text)
        return f"{text} ({'; '.join(found)})" if found else text
